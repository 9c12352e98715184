//! Swaps made while an archive is built: a directory replaced by a symbolic link, a file by
//! another, between the walk and the read or during the walk. Whatever is swapped in, the
//! archive never holds bytes from outside the configured sources, and the manifest says what
//! was refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

/// Stands for `/etc/shadow`: must never be in an archive of the log directory.
const SECRET: &[u8] = b"root:$6$not-for-the-archive$:19000:0:99999:7:::\n";

/// Whether any entry of the archive holds the secret's bytes.
fn leaks_secret(built: &Built) -> bool {
    built
        .entries
        .iter()
        .any(|e| e.data.windows(SECRET.len()).any(|w| w == SECRET))
}

/// The `skipped` reason as the manifest's JSON spells it.
fn reason_text(reason: SkipReason) -> String {
    serde_json::to_value(reason)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

/// Asserts that the manifest lists `path` as skipped because it was refused, with the why in
/// `errors`, and returns that why.
fn assert_refused(built: &Built, path: &str) -> String {
    let m = built.manifest();
    let skipped: Vec<(String, String)> = m
        .skipped
        .iter()
        .map(|s| (s.path.clone(), reason_text(s.reason)))
        .collect();
    assert!(
        skipped.contains(&(path.to_string(), "refused".to_string())),
        "{path} not refused: skipped {skipped:?}, errors {:?}",
        m.errors
    );
    let error = m
        .errors
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no error says why {path} was refused: {:?}", m.errors));
    assert_eq!(error.operation, "open");
    assert!(error.error.starts_with("refused:"), "{error:?}");
    assert!(
        !built.file_names().contains(&path[1..].to_string()),
        "{path} is not archived"
    );
    error.error.clone()
}

/// `logs/app/app.log` inside the source, and a file of the same name outside it, in a
/// directory the swap points `logs/app` at.
fn log_and_secret(root: &Path) -> PathBuf {
    put(root, "logs/app/app.log", b"an app log line\n", 10);
    put(root, "logs/top.log", b"top\n", 20);
    put(root, "etc/app.log", SECRET, 10);
    put(root, "etc/shadow", SECRET, 10);
    root.join("etc")
}

/// Replaces the directory `dir` by a symbolic link to `target` (what a local user who owns
/// the log directory can do at any moment); the directory is parked at `parked`, outside the
/// source, so that a walk still listing the parent cannot find it again.
fn swap_for_link(dir: &Path, target: &Path, parked: &Path) {
    fs::rename(dir, parked).unwrap();
    symlink(target, dir).unwrap();
}

/// Undoes [`swap_for_link`].
fn unswap(dir: &Path, parked: &Path) {
    if dir.is_symlink() {
        fs::remove_file(dir).unwrap();
        fs::rename(parked, dir).unwrap();
    }
}

fn build_swapping_before_open(spec: &ArchiveSpec, hooks: Hooks<'_>, swap: &dyn Fn()) -> Built {
    let swapped = AtomicBool::new(false);
    let hook = |path: &Path| {
        if path.ends_with("app/app.log") && !swapped.swap(true, Ordering::SeqCst) {
            swap();
        }
    };
    let hooks = Hooks {
        before_open: Some(&hook),
        ..hooks
    };
    let built = build_hooked(spec, &[], None, &hooks);
    assert!(swapped.load(Ordering::SeqCst), "the swap was made");
    built
}

#[test]
fn a_directory_swapped_for_a_link_after_the_walk_is_not_read_through() {
    let (_dir, root) = scratch();
    let secret_dir = log_and_secret(&root);
    let (logs_app, parked) = (root.join("logs/app"), root.join("parked"));
    let swap = || swap_for_link(&logs_app, &secret_dir, &parked);
    for source in [abs(&root, "logs"), abs(&root, "logs/*/*.log")] {
        let spec = spec(&[source.clone(), abs(&root, "logs/top.log")]);
        unswap(&logs_app, &parked);
        let built = build_swapping_before_open(&spec, Hooks::default(), &swap);
        assert!(
            !leaks_secret(&built),
            "{source}: the secret is in the archive"
        );
        let why = assert_refused(&built, &abs(&root, "logs/app/app.log"));
        assert!(why.contains("symbolic link"), "{why}");
        if source.ends_with("logs") {
            assert_eq!(built.file_names(), vec![name(&root, "logs/top.log")]);
        }
    }
}

#[test]
fn a_file_replaced_after_the_walk_is_refused() {
    let (_dir, root) = scratch();
    let path = put(&root, "logs/app/app.log", b"listed\n", 10);
    put(&root, "logs/app/other.log", b"other\n", 20);
    let replace = || {
        let impostor = root.join("logs/app/.impostor");
        fs::write(&impostor, SECRET).unwrap();
        fs::rename(&impostor, &path).unwrap();
    };
    let built =
        build_swapping_before_open(&spec(&[abs(&root, "logs")]), Hooks::default(), &replace);
    assert!(!leaks_secret(&built), "the replacement is in the archive");
    let why = assert_refused(&built, &abs(&root, "logs/app/app.log"));
    assert!(why.contains("inode"), "{why}");
    assert_eq!(
        built
            .entry(&name(&root, "logs/app/other.log"))
            .unwrap()
            .data,
        b"other\n"
    );
}

#[test]
fn a_configured_file_swapped_for_a_link_is_refused() {
    let (_dir, root) = scratch();
    let secret_dir = log_and_secret(&root);
    let path = root.join("logs/app/app.log");
    let swap = || {
        fs::remove_file(&path).unwrap();
        symlink(secret_dir.join("shadow"), &path).unwrap();
    };
    let built = build_swapping_before_open(
        &spec(&[abs(&root, "logs/app/app.log")]),
        Hooks::default(),
        &swap,
    );
    assert!(!leaks_secret(&built));
    assert_refused(&built, &abs(&root, "logs/app/app.log"));
}

/// A swap during the walk: walking by full paths, the walk would list (and the writer read)
/// what the link points at.
#[cfg(debug_assertions)]
#[test]
fn the_walk_does_not_follow_a_directory_swapped_for_a_link() {
    use super::super::select::EnterHook;

    let (_dir, root) = scratch();
    let secret_dir = log_and_secret(&root);
    put(&root, "logs/zz/later.log", b"later\n", 30);
    let (logs_app, parked) = (root.join("logs/app"), root.join("parked"));
    for source in [abs(&root, "logs"), abs(&root, "logs/**/*.log")] {
        unswap(&logs_app, &parked);
        let swapped = Arc::new(AtomicBool::new(false));
        let hook = {
            let swapped = Arc::clone(&swapped);
            let (logs_app, parked, secret_dir) =
                (logs_app.clone(), parked.clone(), secret_dir.clone());
            // Listed as a directory; swapped just before the walk goes into it.
            EnterHook(Arc::new(move |dir: &Path| {
                if dir == logs_app && !swapped.swap(true, Ordering::SeqCst) {
                    swap_for_link(&logs_app, &secret_dir, &parked);
                }
            }))
        };
        let hooks = Hooks {
            walk_entering: Some(hook),
            ..Hooks::default()
        };
        let built = build_hooked(&spec(std::slice::from_ref(&source)), &[], None, &hooks);
        assert!(
            swapped.load(Ordering::SeqCst),
            "{source}: the swap was made"
        );
        assert!(
            !leaks_secret(&built),
            "{source}: the secret is in the archive"
        );
        let m = built.manifest();
        let json = String::from_utf8(built.outcome.manifest_json.clone()).unwrap();
        assert!(
            !json.contains("shadow"),
            "{source}: names from outside the source are listed: {json}"
        );
        let error = m
            .errors
            .iter()
            .find(|e| e.path == abs(&root, "logs/app"))
            .unwrap_or_else(|| panic!("{source}: the swapped directory: {:?}", m.errors));
        assert_eq!(error.operation, "walk");
        assert!(error.error.contains("not entered"), "{error:?}");
        // The rest of the source is still archived.
        assert_eq!(
            built.file_names(),
            vec![
                name(&root, "logs/top.log"),
                name(&root, "logs/zz/later.log")
            ],
            "{source}"
        );
    }
}

/// Where the kernel has no `openat2` (before 5.6, or a seccomp filter that refuses it), the
/// same swaps are refused by the fallback, and the other files are archived through it.
#[test]
fn the_fallback_without_openat2_refuses_the_same_swaps() {
    use super::super::beneath::Resolve;

    let (_dir, root) = scratch();
    let secret_dir = log_and_secret(&root);
    let (logs_app, parked) = (root.join("logs/app"), root.join("parked"));
    let components = || Hooks {
        resolve: Resolve::Components,
        ..Hooks::default()
    };
    let spec = spec(&[abs(&root, "logs")]);

    let swap = || swap_for_link(&logs_app, &secret_dir, &parked);
    let built = build_swapping_before_open(&spec, components(), &swap);
    assert!(!leaks_secret(&built), "the secret is in the archive");
    let why = assert_refused(&built, &abs(&root, "logs/app/app.log"));
    assert!(why.contains("symbolic link"), "{why}");
    assert_eq!(
        built.entry(&name(&root, "logs/top.log")).unwrap().data,
        b"top\n"
    );

    unswap(&logs_app, &parked);
    let replace = || {
        let impostor = root.join("logs/app/.impostor");
        fs::write(&impostor, SECRET).unwrap();
        fs::rename(&impostor, logs_app.join("app.log")).unwrap();
    };
    let built = build_swapping_before_open(&spec, components(), &replace);
    assert!(!leaks_secret(&built), "the replacement is in the archive");
    let why = assert_refused(&built, &abs(&root, "logs/app/app.log"));
    assert!(why.contains("inode"), "{why}");
    assert_eq!(
        built.entry(&name(&root, "logs/top.log")).unwrap().data,
        b"top\n"
    );
}
