//! Tests of the archive as a whole: selection, order, caps, links, changing files, deadlines,
//! the manifest, and decoding with the tar and flate2 crates, zstd and the system's `tar`.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use super::writer::{Hooks, write_archive};
use super::*;

/// One decoded tar entry.
#[derive(Debug)]
struct Entry {
    path: String,
    /// The name's exact bytes, as stored in the tar.
    raw_path: Vec<u8>,
    kind: tar::EntryType,
    data: Vec<u8>,
    link: Option<String>,
    mode: u32,
    mtime: u64,
}

fn decode_tar(reader: impl Read) -> Vec<Entry> {
    let mut archive = tar::Archive::new(reader);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let raw_path = entry.path_bytes().into_owned();
            let link = entry
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let header = entry.header();
            let (kind, mode, mtime) = (
                header.entry_type(),
                header.mode().unwrap(),
                header.mtime().unwrap(),
            );
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            Entry {
                path,
                raw_path,
                kind,
                data,
                link,
                mode,
                mtime,
            }
        })
        .collect()
}

fn decode(bytes: &[u8], compression: &Compression) -> Vec<Entry> {
    match compression {
        Compression::Gzip { .. } => decode_tar(flate2::read::MultiGzDecoder::new(bytes)),
        Compression::Zstd { .. } => decode_tar(zstd::stream::read::Decoder::new(bytes).unwrap()),
        Compression::None => decode_tar(bytes),
    }
}

fn gzip() -> Compression {
    Compression::Gzip {
        level: 6,
        threads: 2,
        block_bytes: 64 * 1024,
    }
}

fn spec(sources: &[String]) -> ArchiveSpec {
    ArchiveSpec {
        sources: sources.to_vec(),
        exclude: Vec::new(),
        compression: gzip(),
        max_total_bytes: None,
        max_file_bytes: None,
        max_files: DEFAULT_MAX_FILES,
    }
}

/// A scratch directory, resolved (so that configured and resolved paths agree).
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap();
    (dir, root)
}

/// Writes a file (creating its directory) with an mtime `age_secs` in the past.
fn put(root: &Path, relative: &str, data: &[u8], age_secs: u64) -> PathBuf {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, data).unwrap();
    let mtime = SystemTime::now() - Duration::from_secs(age_secs);
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    path
}

fn abs(root: &Path, relative: &str) -> String {
    root.join(relative).to_string_lossy().into_owned()
}

/// The entry name of a file: its absolute path without the leading `/`.
fn name(root: &Path, relative: &str) -> String {
    abs(root, relative).trim_start_matches('/').to_string()
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

struct Built {
    outcome: ArchiveOutcome,
    entries: Vec<Entry>,
    bytes: Vec<u8>,
}

impl Built {
    fn manifest(&self) -> &Manifest {
        &self.outcome.manifest
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.path == name)
    }

    fn file_names(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.kind == tar::EntryType::Regular && e.path != MANIFEST_PATH)
            .map(|e| e.path.clone())
            .collect()
    }

    fn record(&self, path: &str) -> &FileRecord {
        self.manifest()
            .files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} not in the manifest's files"))
    }
}

fn build_hooked(
    spec: &ArchiveSpec,
    extras: &[ExtraEntry],
    deadline: Option<Instant>,
    hooks: &Hooks<'_>,
) -> Built {
    let mut bytes = Vec::new();
    let drain = serde_json::json!({"instance_id": "i-0abc", "reason": "test"});
    let outcome = write_archive(spec, extras, drain, deadline, &mut bytes, hooks).unwrap();
    assert_eq!(outcome.compressed_bytes, bytes.len() as u64);
    let entries = decode(&bytes, &spec.compression);
    // The manifest is the last entry and says what the outcome says.
    let last = entries.last().unwrap();
    assert_eq!(last.path, MANIFEST_PATH);
    let manifest: Manifest = serde_json::from_slice(&last.data).unwrap();
    assert_eq!(manifest, outcome.manifest);
    assert_eq!(outcome.manifest_sha256, sha(&last.data));
    Built {
        outcome,
        entries,
        bytes,
    }
}

fn build(spec: &ArchiveSpec) -> Built {
    build_hooked(spec, &[], None, &Hooks::default())
}

fn skipped(built: &Built) -> Vec<(String, SkipReason)> {
    built
        .manifest()
        .skipped
        .iter()
        .map(|s| (s.path.clone(), s.reason))
        .collect()
}

#[test]
fn sources_expand_files_globs_directories_and_excludes() {
    let (_dir, root) = scratch();
    put(&root, "app/a.log", b"a\n", 50);
    put(&root, "app/b.log", b"b\n", 40);
    put(&root, "app/old.log.gz", b"gz", 30);
    put(&root, "app/sub/c.log", b"c\n", 20);
    put(&root, "nginx/access.log", b"access\n", 10);
    put(&root, "nginx/error.log", b"error\n", 5);
    put(&root, "nginx/cache/blob.bin", b"blob", 1);
    put(&root, "other/z.txt", b"z", 1);
    put(&root, "deep/x/y/error.log", b"deep error\n", 60);
    let mut spec = spec(&[
        abs(&root, "app/*.log"),
        abs(&root, "nginx"),
        abs(&root, "app"),
        abs(&root, "app/sub/./c.log"),
        abs(&root, "deep/**/error.log"),
        abs(&root, "missing/*.log"),
        abs(&root, "nothing-here"),
    ]);
    spec.exclude = vec!["*.gz".to_string(), abs(&root, "nginx/cache/")];
    let built = build(&spec);

    let mut names = built.file_names();
    names.sort();
    let mut expected: Vec<String> = [
        "app/a.log",
        "app/b.log",
        "app/sub/c.log",
        "nginx/access.log",
        "nginx/error.log",
        "deep/x/y/error.log",
    ]
    .iter()
    .map(|r| name(&root, r))
    .collect();
    expected.sort();
    assert_eq!(names, expected, "each file once, excluded ones left out");

    let matched: Vec<u64> = built.manifest().sources.iter().map(|s| s.matched).collect();
    assert_eq!(matched, vec![2, 2, 3, 1, 1, 0, 0]);
    assert!(
        built.manifest().errors.is_empty(),
        "{:?}",
        built.manifest().errors
    );
    assert!(built.manifest().skipped.is_empty());
    let a = built.record(&abs(&root, "app/a.log"));
    assert_eq!(a.size, 2);
    assert_eq!(a.sha256, sha(b"a\n"));
    assert_eq!(built.entry(&name(&root, "app/a.log")).unwrap().data, b"a\n");
}

#[test]
fn files_are_archived_newest_first() {
    let (_dir, root) = scratch();
    put(&root, "logs/old.log", b"old", 300);
    put(&root, "logs/new.log", b"new", 10);
    put(&root, "logs/mid.log", b"mid", 100);
    put(&root, "logs/tie-b.log", b"b", 200);
    put(&root, "logs/tie-a.log", b"a", 200);
    // Same mtime for the two ties, to the nanosecond.
    let tie = fs::metadata(root.join("logs/tie-b.log"))
        .unwrap()
        .modified()
        .unwrap();
    File::options()
        .write(true)
        .open(root.join("logs/tie-a.log"))
        .unwrap()
        .set_modified(tie)
        .unwrap();
    let built = build(&spec(&[abs(&root, "logs")]));
    let expected: Vec<String> = ["new", "mid", "tie-a", "tie-b", "old"]
        .iter()
        .map(|n| name(&root, &format!("logs/{n}.log")))
        .collect();
    assert_eq!(built.file_names(), expected);
    let in_manifest: Vec<String> = built
        .manifest()
        .files
        .iter()
        .map(|f| f.path.trim_start_matches('/').to_string())
        .collect();
    assert_eq!(in_manifest, expected);
}

#[test]
fn total_cap_is_filled_greedily_newest_first() {
    let (_dir, root) = scratch();
    put(&root, "l/1.log", &[b'1'; 600], 10);
    put(&root, "l/2.log", &[b'2'; 500], 20);
    put(&root, "l/3.log", &[b'3'; 300], 30);
    put(&root, "l/4.log", &[b'4'; 100], 40);
    put(&root, "l/5.log", &[b'5'; 1], 50);
    let mut spec = spec(&[abs(&root, "l")]);
    spec.max_total_bytes = Some(1000);
    let plan = plan(&spec).unwrap();
    let planned: Vec<&str> = plan.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        planned,
        vec![
            abs(&root, "l/1.log"),
            abs(&root, "l/3.log"),
            abs(&root, "l/4.log")
        ]
    );
    assert_eq!(plan.file_bytes, 1000);

    let built = build(&spec);
    assert_eq!(
        built.file_names(),
        vec![
            name(&root, "l/1.log"),
            name(&root, "l/3.log"),
            name(&root, "l/4.log")
        ]
    );
    assert_eq!(
        skipped(&built),
        vec![
            (abs(&root, "l/2.log"), SkipReason::MaxTotalBytes),
            (abs(&root, "l/5.log"), SkipReason::MaxTotalBytes),
        ]
    );
    assert_eq!(built.manifest().skipped[0].size, 500);
    assert_eq!(built.outcome.content_bytes, 1000);
    assert_eq!(built.manifest().totals.file_bytes, 1000);
    assert_eq!(built.manifest().totals.skipped_bytes, 501);
}

#[test]
fn file_cap_keeps_the_tail() {
    let (_dir, root) = scratch();
    let big: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    put(&root, "l/big.log", &big, 10);
    put(&root, "l/small.log", b"small", 20);
    let mut spec = spec(&[abs(&root, "l/*.log")]);
    spec.max_file_bytes = Some(1000);
    spec.max_total_bytes = Some(1005);
    let plan = plan(&spec).unwrap();
    assert_eq!(plan.files[0].size, 1000);
    assert_eq!(plan.files[0].offset, 9000);
    assert_eq!(plan.files[0].original_size, 10_000);
    assert_eq!(
        plan.files.len(),
        2,
        "the tail, not the whole file, counts against the total"
    );

    let built = build(&spec);
    let entry = built.entry(&name(&root, "l/big.log")).unwrap();
    assert_eq!(entry.data, &big[9000..]);
    let record = built.record(&abs(&root, "l/big.log"));
    assert_eq!(record.size, 1000);
    assert_eq!(record.original_size, 10_000);
    assert_eq!(record.offset, 9000);
    assert_eq!(record.padding, 0);
    assert_eq!(
        record.truncated,
        Some(Truncation {
            reason: TruncateReason::MaxFileBytes,
            from_offset: 9000
        })
    );
    assert_eq!(record.sha256, sha(&big[9000..]));
    let small = built.record(&abs(&root, "l/small.log"));
    assert_eq!(small.truncated, None);
    assert_eq!(small.offset, 0);
}

#[test]
fn symlinks_are_stored_as_links_and_never_followed() {
    let (_dir, root) = scratch();
    put(&root, "logs/real.log", b"real", 10);
    put(&root, "outside/secret.log", b"secret", 10);
    symlink("real.log", root.join("logs/inside")).unwrap();
    symlink("/etc/passwd", root.join("logs/absolute")).unwrap();
    symlink("../outside", root.join("logs/dirlink")).unwrap();
    symlink("no/such/file", root.join("logs/dangling")).unwrap();
    let built = build(&spec(&[abs(&root, "logs"), abs(&root, "logs/*")]));

    assert_eq!(built.file_names(), vec![name(&root, "logs/real.log")]);
    let links: Vec<(String, String)> = built
        .entries
        .iter()
        .filter(|e| e.kind == tar::EntryType::Symlink)
        .map(|e| (e.path.clone(), e.link.clone().unwrap()))
        .collect();
    let expected = vec![
        (name(&root, "logs/absolute"), "/etc/passwd".to_string()),
        (name(&root, "logs/dangling"), "no/such/file".to_string()),
        (name(&root, "logs/dirlink"), "../outside".to_string()),
        (name(&root, "logs/inside"), "real.log".to_string()),
    ];
    assert_eq!(links, expected);
    assert!(built.entries.iter().all(|e| !e.path.contains("secret")));
    assert!(built.entries.iter().all(|e| e.data != b"secret"));
    let recorded: Vec<(String, String)> = built
        .manifest()
        .symlinks
        .iter()
        .map(|s| (s.path.trim_start_matches('/').to_string(), s.target.clone()))
        .collect();
    assert_eq!(recorded, expected);
    assert_eq!(built.manifest().totals.symlinks, 4);
    assert_eq!(
        plan(&spec(&[abs(&root, "logs")])).unwrap().symlinks.len(),
        4
    );
}

#[test]
fn a_configured_root_that_is_a_link_is_resolved_once() {
    let (_dir, root) = scratch();
    put(&root, "data/app/app.log", b"app", 10);
    put(&root, "data/app/more/deeper.log", b"deeper", 20);
    symlink(root.join("data/app"), root.join("current")).unwrap();
    symlink("app.log", root.join("data/app/latest.log")).unwrap();
    let built = build(&spec(&[
        abs(&root, "current"),
        abs(&root, "data/app/latest.log"),
    ]));
    assert_eq!(
        built.file_names(),
        vec![
            name(&root, "current/app.log"),
            name(&root, "current/more/deeper.log")
        ],
        "entries keep the configured name; the file behind a configured link is archived once"
    );
    // Below the root, the link is a link.
    assert_eq!(
        built
            .entry(&name(&root, "current/latest.log"))
            .unwrap()
            .link
            .as_deref(),
        Some("app.log")
    );

    let by_glob = build(&spec(&[abs(&root, "current/*.log")]));
    assert_eq!(by_glob.file_names(), vec![name(&root, "current/app.log")]);
    assert_eq!(by_glob.manifest().symlinks.len(), 1);
}

#[test]
fn special_files_are_skipped_and_listed() {
    let (_dir, root) = scratch();
    put(&root, "run/app.log", b"log", 10);
    let _listener = std::os::unix::net::UnixListener::bind(root.join("run/app.sock")).unwrap();
    let fifo = Command::new("mkfifo")
        .arg(root.join("run/app.fifo"))
        .status();
    let have_fifo = fifo.is_ok_and(|s| s.success());
    let built = build(&spec(&[abs(&root, "run")]));
    assert_eq!(built.file_names(), vec![name(&root, "run/app.log")]);
    let mut expected = vec![(abs(&root, "run/app.sock"), SkipReason::SpecialFile)];
    if have_fifo {
        expected.insert(0, (abs(&root, "run/app.fifo"), SkipReason::SpecialFile));
    }
    assert_eq!(skipped(&built), expected);
}

#[test]
fn vanished_and_unreadable_files_are_errors_not_aborts() {
    let (_dir, root) = scratch();
    put(&root, "l/1-ok.log", b"fine", 10);
    put(&root, "l/2-vanishes.log", b"gone", 20);
    let unreadable = put(&root, "l/3-unreadable.log", b"locked", 30);
    put(&root, "l/4-becomes-fifo.log", b"fifo", 40);
    put(&root, "l/5-ok.log", b"also fine", 50);

    // Root reads whatever the mode says; then a file replaced by a directory is unreadable.
    fs::set_permissions(&unreadable, fs::Permissions::from_mode(0o000)).unwrap();
    let privileged = File::open(&unreadable).is_ok();
    let have_mkfifo = Command::new("mkfifo").arg("--version").output().is_ok();
    let hook = |path: &Path| {
        let file = path.file_name().unwrap().to_string_lossy();
        if file == "2-vanishes.log" {
            fs::remove_file(path).unwrap();
        } else if file == "3-unreadable.log" && privileged {
            fs::remove_file(path).unwrap();
            fs::create_dir(path).unwrap();
        } else if file == "4-becomes-fifo.log" && have_mkfifo {
            // Opening a FIFO for reading would block until a writer comes: it must not.
            fs::remove_file(path).unwrap();
            assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
        }
    };
    let hooks = Hooks {
        before_open: Some(&hook),
        after_open: None,
        ..Hooks::default()
    };
    let built = build_hooked(&spec(&[abs(&root, "l")]), &[], None, &hooks);

    assert_eq!(
        built.file_names(),
        if have_mkfifo {
            vec![name(&root, "l/1-ok.log"), name(&root, "l/5-ok.log")]
        } else {
            vec![
                name(&root, "l/1-ok.log"),
                name(&root, "l/4-becomes-fifo.log"),
                name(&root, "l/5-ok.log"),
            ]
        }
    );
    let errors = &built.manifest().errors;
    let find = |file: &str| {
        errors
            .iter()
            .find(|e| e.path == abs(&root, file))
            .unwrap_or_else(|| panic!("{file} not in {errors:?}"))
    };
    let vanished = find("l/2-vanishes.log");
    assert_eq!(vanished.operation, "open");
    assert!(vanished.error.contains("No such file"), "{vanished:?}");
    let locked = find("l/3-unreadable.log");
    assert_eq!(locked.operation, "open");
    if !privileged {
        assert!(locked.error.contains("Permission denied"), "{locked:?}");
    }
    if have_mkfifo {
        assert!(find("l/4-becomes-fifo.log").error.contains("regular file"));
    }
    assert_eq!(built.manifest().totals.errors, errors.len() as u64);
    assert_eq!(
        built.entry(&name(&root, "l/5-ok.log")).unwrap().data,
        b"also fine"
    );
}

#[test]
fn a_growing_file_is_captured_to_its_length_at_open() {
    let (_dir, root) = scratch();
    let original: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
    let path = put(&root, "l/grows.log", &original, 10);
    let hook = |p: &Path| {
        let mut file = File::options().append(true).open(p).unwrap();
        file.write_all(&[b'+'; 300_000]).unwrap();
    };
    let hooks = Hooks {
        before_open: None,
        after_open: Some(&hook),
        ..Hooks::default()
    };
    let built = build_hooked(&spec(&[abs(&root, "l")]), &[], None, &hooks);
    let entry = built.entry(&name(&root, "l/grows.log")).unwrap();
    assert_eq!(entry.data, original);
    let record = built.record(&path.to_string_lossy());
    assert_eq!(record.size, 700_000);
    assert_eq!(record.original_size, 700_000);
    assert!(record.changed_while_reading);
    assert_eq!(record.truncated, None);
    assert_eq!(record.sha256, sha(&original));
    assert_eq!(built.manifest().totals.changed_while_reading, 1);
}

#[test]
fn a_file_appended_to_concurrently_yields_a_prefix() {
    let (_dir, root) = scratch();
    let path = put(&root, "l/busy.log", &vec![b'x'; 4 << 20], 10);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let built = std::thread::scope(|s| {
        s.spawn(|| {
            let mut file = File::options().append(true).open(&path).unwrap();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                file.write_all(format!("line {n}\n").as_bytes()).unwrap();
                n += 1;
                if n.is_multiple_of(64) {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        });
        let built = build(&spec(&[abs(&root, "l")]));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        built
    });
    let now = fs::read(&path).unwrap();
    let entry = built.entry(&name(&root, "l/busy.log")).unwrap();
    let record = built.record(&path.to_string_lossy());
    assert_eq!(entry.data.len() as u64, record.size);
    assert!(record.size >= 4 << 20);
    assert_eq!(
        entry.data,
        now[..entry.data.len()],
        "a prefix of the file, nothing more"
    );
    assert_eq!(record.truncated, None);
}

#[test]
fn a_shrinking_file_is_padded_to_its_header_size() {
    let (_dir, root) = scratch();
    let original: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
    let path = put(&root, "l/rotated.log", &original, 10);
    let hook = |p: &Path| {
        File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(100_000)
            .unwrap();
    };
    let hooks = Hooks {
        before_open: None,
        after_open: Some(&hook),
        ..Hooks::default()
    };
    let built = build_hooked(&spec(&[abs(&root, "l")]), &[], None, &hooks);
    let entry = built.entry(&name(&root, "l/rotated.log")).unwrap();
    assert_eq!(entry.data.len(), 1_000_000);
    assert_eq!(entry.data[..100_000], original[..100_000]);
    assert!(entry.data[100_000..].iter().all(|&b| b == 0));
    let record = built.record(&path.to_string_lossy());
    assert_eq!(record.size, 1_000_000);
    assert_eq!(record.padding, 900_000);
    assert!(record.changed_while_reading);
    assert_eq!(
        record.truncated,
        Some(Truncation {
            reason: TruncateReason::Shrank,
            from_offset: 100_000
        })
    );
    assert_eq!(record.sha256, sha(&entry.data));
}

#[test]
fn a_passed_deadline_leaves_only_extras_and_the_manifest() {
    let (_dir, root) = scratch();
    put(&root, "l/a.log", b"a", 10);
    put(&root, "l/b.log", b"b", 20);
    symlink("a.log", root.join("l/link")).unwrap();
    let extras = [ExtraEntry {
        path: "lifeguard/steps/01-stop.log".to_string(),
        data: b"stopped\n".to_vec(),
    }];
    let now = Some(Instant::now());
    let built = build_hooked(&spec(&[abs(&root, "l")]), &extras, now, &Hooks::default());
    let names: Vec<&str> = built.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(names, vec!["lifeguard/steps/01-stop.log", MANIFEST_PATH]);
    // Not even searched: the walk's share of the deadline is gone too.
    assert_eq!(
        built.manifest().sources[0].incomplete,
        Some(IncompleteWalk {
            reason: WalkStop::Deadline,
            path: abs(&root, "l"),
            path_base64: None,
        })
    );
    assert!(built.manifest().totals.deadline_reached);
    assert!(built.manifest().totals.walk_incomplete);
    assert!(built.manifest().files.is_empty());
}

#[test]
fn a_deadline_inside_a_file_pads_it_and_skips_the_rest() {
    let (_dir, root) = scratch();
    let data = vec![b'x'; 2_000_000];
    let path = put(&root, "l/1-newest.log", &data, 10);
    put(&root, "l/2-older.log", b"older", 20);
    // Far enough for the first file to be started on a busy machine; the hook then waits.
    let deadline = Instant::now() + Duration::from_secs(1);
    let hook = |_: &Path| {
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    };
    let hooks = Hooks {
        before_open: None,
        after_open: Some(&hook),
        ..Hooks::default()
    };
    let built = build_hooked(&spec(&[abs(&root, "l")]), &[], Some(deadline), &hooks);
    let entry = built.entry(&name(&root, "l/1-newest.log")).unwrap();
    assert_eq!(entry.data.len(), 2_000_000);
    assert!(entry.data.iter().all(|&b| b == 0));
    let record = built.record(&path.to_string_lossy());
    assert_eq!(
        record.truncated,
        Some(Truncation {
            reason: TruncateReason::Deadline,
            from_offset: 0
        })
    );
    assert_eq!(record.padding, 2_000_000);
    assert_eq!(record.sha256, sha(&entry.data));
    assert_eq!(
        skipped(&built),
        vec![(abs(&root, "l/2-older.log"), SkipReason::Deadline)]
    );
    assert!(built.manifest().totals.deadline_reached);
}

#[test]
fn the_manifest_describes_the_archive() {
    let (_dir, root) = scratch();
    let a = put(&root, "l/a.log", &vec![b'a'; 150_000], 3600);
    fs::set_permissions(&a, fs::Permissions::from_mode(0o640)).unwrap();
    put(&root, "l/b.log", b"", 7200);
    let long_dir = "d".repeat(60);
    put(
        &root,
        &format!("l/{long_dir}/{long_dir}/long.log"),
        b"long name",
        10,
    );
    let extras = [
        ExtraEntry {
            path: "lifeguard/steps/01-stop-nginx.log".to_string(),
            data: b"nginx stopped\n".to_vec(),
        },
        ExtraEntry {
            path: "lifeguard/steps/02-wait.log".to_string(),
            data: Vec::new(),
        },
    ];
    let built = build_hooked(&spec(&[abs(&root, "l")]), &extras, None, &Hooks::default());
    let m = built.manifest();

    let names: Vec<&str> = built.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(names[0], "lifeguard/steps/01-stop-nginx.log");
    assert_eq!(names[1], "lifeguard/steps/02-wait.log");
    assert_eq!(names.len(), 2 + 3 + 1);
    assert_eq!(m.extras[0].sha256, sha(b"nginx stopped\n"));
    assert_eq!(m.extras[1].size, 0);

    assert_eq!(m.format_version, FORMAT_VERSION);
    assert_eq!(m.compression, "gzip");
    assert_eq!(m.drain["instance_id"], "i-0abc");
    let created = time::OffsetDateTime::parse(
        &m.created_at,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        (time::OffsetDateTime::now_utc() - created)
            .whole_seconds()
            .abs()
            < 60
    );
    assert!(m.created_at.ends_with('Z'));

    for record in &m.files {
        let entry = built
            .entry(record.path.trim_start_matches('/'))
            .unwrap_or_else(|| panic!("{} not archived", record.path));
        assert_eq!(record.sha256, sha(&entry.data), "{}", record.path);
        assert_eq!(record.size, entry.data.len() as u64);
        assert!(!record.changed_while_reading);
    }
    let record = built.record(&a.to_string_lossy());
    assert_eq!(record.mode, "0640");
    let entry = built.entry(&name(&root, "l/a.log")).unwrap();
    assert_eq!(entry.mode, 0o640);
    let mtime = fs::metadata(&a).unwrap().modified().unwrap();
    let secs = mtime
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(entry.mtime, secs);
    assert!(record.mtime.ends_with('Z'));

    let totals = &m.totals;
    assert_eq!(totals.files, 3);
    assert_eq!(totals.file_bytes, 150_000 + 9);
    assert_eq!(totals.extras, 2);
    assert_eq!(totals.extra_bytes, 14);
    assert!(!totals.deadline_reached);
    assert_eq!(built.outcome.content_bytes, 150_009);

    // Stable field names.
    let json: serde_json::Value = serde_json::to_value(m).unwrap();
    for key in [
        "format_version",
        "created_at",
        "compression",
        "drain",
        "sources",
        "extras",
        "files",
        "symlinks",
        "skipped",
        "errors",
        "totals",
    ] {
        assert!(json.get(key).is_some(), "{key}");
    }
    let file = &json["files"][0];
    for key in [
        "path",
        "size",
        "original_size",
        "offset",
        "padding",
        "mtime",
        "mode",
        "sha256",
        "changed_while_reading",
        "truncated",
    ] {
        assert!(file.get(key).is_some(), "{key}");
    }
}

#[test]
fn extra_names_win_over_files() {
    let (_dir, root) = scratch();
    put(&root, "l/a.log", b"from disk", 10);
    put(&root, "l/b.log", b"b", 20);
    let extras = [ExtraEntry {
        path: name(&root, "l/a.log"),
        data: b"from the drain".to_vec(),
    }];
    let built = build_hooked(&spec(&[abs(&root, "l")]), &extras, None, &Hooks::default());
    assert_eq!(
        built.entry(&name(&root, "l/a.log")).unwrap().data,
        b"from the drain"
    );
    assert_eq!(
        skipped(&built),
        vec![(abs(&root, "l/a.log"), SkipReason::NameConflict)]
    );
}

#[test]
fn system_tar_extracts_the_archive() {
    let (_dir, root) = scratch();
    let text: Vec<u8> = (0..400_000u32)
        .flat_map(|i| format!("{i} INFO request handled\n").into_bytes())
        .collect();
    put(&root, "logs/app.log", &text, 10);
    let long = format!("logs/{}/{}.log", "x".repeat(90), "y".repeat(90));
    put(&root, &long, b"long path\n", 20);
    symlink("app.log", root.join("logs/current")).unwrap();
    let long_target = format!("../{}/target.log", "t".repeat(120));
    symlink(&long_target, root.join("logs/far")).unwrap();
    let archive_path = root.join("out/archive.tar.gz");
    fs::create_dir_all(root.join("out")).unwrap();
    let file = File::create(&archive_path).unwrap();
    let extras = [ExtraEntry {
        path: "lifeguard/steps/01-x.log".to_string(),
        data: b"ok\n".to_vec(),
    }];
    let outcome = build_archive(
        &spec(&[abs(&root, "logs")]),
        &extras,
        serde_json::json!({}),
        None,
        std::io::BufWriter::new(file),
    )
    .unwrap();
    assert_eq!(
        outcome.compressed_bytes,
        fs::metadata(&archive_path).unwrap().len()
    );
    assert!(
        outcome.content_bytes > 64 * 1024 * 4,
        "several gzip members"
    );

    let target = root.join("extracted");
    fs::create_dir_all(&target).unwrap();
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&archive_path)
        .arg("-C")
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success());
    let inside = |relative: &str| target.join(name(&root, relative));
    assert_eq!(fs::read(inside("logs/app.log")).unwrap(), text);
    assert_eq!(fs::read(inside(&long)).unwrap(), b"long path\n");
    assert_eq!(
        fs::read_link(inside("logs/current")).unwrap(),
        Path::new("app.log")
    );
    assert_eq!(
        fs::read_link(inside("logs/far")).unwrap(),
        Path::new(&long_target)
    );
    assert_eq!(
        fs::read(target.join("lifeguard/steps/01-x.log")).unwrap(),
        b"ok\n"
    );
    let manifest: Manifest =
        serde_json::from_slice(&fs::read(target.join(MANIFEST_PATH)).unwrap()).unwrap();
    assert_eq!(manifest, outcome.manifest);
    let gzip_test = Command::new("gzip").arg("-t").arg(&archive_path).status();
    assert!(gzip_test.unwrap().success());
}

#[test]
fn zstd_and_uncompressed_round_trip() {
    let (_dir, root) = scratch();
    let text: Vec<u8> = (0..100_000u32)
        .flat_map(|i| format!("{i} WARN slow\n").into_bytes())
        .collect();
    put(&root, "l/app.log", &text, 10);
    for compression in [
        Compression::Zstd {
            level: 3,
            threads: 2,
        },
        Compression::Zstd {
            level: 1,
            threads: 0,
        },
        Compression::None,
        Compression::Gzip {
            level: 1,
            threads: 0,
            block_bytes: DEFAULT_BLOCK_BYTES,
        },
    ] {
        let mut spec = spec(&[abs(&root, "l")]);
        spec.compression = compression.clone();
        let built = build(&spec);
        let entry = built.entry(&name(&root, "l/app.log")).unwrap();
        assert_eq!(entry.data, text, "{compression:?}");
        let expected = match compression {
            Compression::Gzip { .. } => "gzip",
            Compression::Zstd { .. } => "zstd",
            Compression::None => "none",
        };
        assert_eq!(built.manifest().compression, expected);
        if compression == Compression::None {
            assert!(built.bytes.len() > text.len());
        } else {
            assert!(built.bytes.len() < text.len() / 3, "{compression:?}");
        }
    }
}

#[test]
fn the_plan_is_the_archive_without_contents() {
    let (_dir, root) = scratch();
    put(&root, "l/a.log", &[b'a'; 5000], 10);
    put(&root, "l/b.log", &[b'b'; 3000], 20);
    put(&root, "l/c.log", &[b'c'; 4000], 30);
    symlink("a.log", root.join("l/current")).unwrap();
    let mut spec = spec(&[abs(&root, "l"), abs(&root, "none/*.log")]);
    spec.max_total_bytes = Some(8000);
    spec.max_file_bytes = Some(4500);
    let plan = plan(&spec).unwrap();
    let built = build(&spec);
    let m = built.manifest();
    let planned: Vec<(&str, u64, u64)> = plan
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.size, f.offset))
        .collect();
    let archived: Vec<(&str, u64, u64)> = m
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.size, f.offset))
        .collect();
    assert_eq!(planned, archived);
    assert_eq!(plan.skipped, m.skipped);
    assert_eq!(plan.symlinks, m.symlinks);
    assert_eq!(plan.sources, m.sources);
    assert_eq!(plan.file_bytes, 7500);

    let shown = plan.to_string();
    assert!(shown.starts_with("archive: 2 files, 7500 bytes"), "{shown}");
    assert!(shown.contains("last 4500 of 5000 bytes"), "{shown}");
    assert!(shown.contains("max_total_bytes"), "{shown}");
    assert!(shown.ends_with('\n'));
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(json["files"][0]["path"], abs(&root, "l/a.log"));
}

#[test]
fn bad_specifications_are_refused() {
    let (_dir, root) = scratch();
    let refused = |spec: &ArchiveSpec, extras: &[ExtraEntry]| {
        build_archive(spec, extras, serde_json::Value::Null, None, Vec::new()).unwrap_err()
    };
    let e = refused(&spec(&["var/log".to_string()]), &[]);
    assert!(matches!(e, ArchiveError::RelativeSource { .. }), "{e}");
    assert!(plan(&spec(&["var/log".to_string()])).is_err());
    let e = refused(&spec(&["/var/log/[".to_string()]), &[]);
    assert!(matches!(e, ArchiveError::Pattern { .. }), "{e}");
    let mut bad_exclude = spec(&[abs(&root, "l")]);
    bad_exclude.exclude = vec!["a**b".to_string()];
    assert!(matches!(
        refused(&bad_exclude, &[]),
        ArchiveError::Pattern { .. }
    ));
    for path in ["../x", "/abs", "a/./b", "MANIFEST.json", "", "dir/"] {
        let extras = [ExtraEntry {
            path: path.to_string(),
            data: Vec::new(),
        }];
        let e = refused(&spec(&[]), &extras);
        assert!(matches!(e, ArchiveError::ExtraPath { .. }), "{path}: {e}");
    }
    let twice = [
        ExtraEntry {
            path: "a".to_string(),
            data: Vec::new(),
        },
        ExtraEntry {
            path: "a".to_string(),
            data: Vec::new(),
        },
    ];
    assert!(matches!(
        refused(&spec(&[]), &twice),
        ArchiveError::ExtraPath { .. }
    ));
    let mut level = spec(&[]);
    level.compression = Compression::Gzip {
        level: 12,
        threads: 1,
        block_bytes: DEFAULT_BLOCK_BYTES,
    };
    assert!(matches!(
        refused(&level, &[]),
        ArchiveError::Compression { .. }
    ));
    level.compression = Compression::Zstd {
        level: 99,
        threads: 1,
    };
    assert!(matches!(
        refused(&level, &[]),
        ArchiveError::Compression { .. }
    ));
}

/// An output that fails after some bytes.
struct Broken(usize);

impl Write for Broken {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.0 {
            return Err(std::io::Error::other("connection reset"));
        }
        self.0 -= buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn an_output_failure_aborts_the_archive() {
    let (_dir, root) = scratch();
    let noise: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    put(&root, "l/noise.log", &noise, 10);
    for compression in [gzip(), Compression::None] {
        let mut spec = spec(&[abs(&root, "l")]);
        spec.compression = compression;
        let result = build_archive(&spec, &[], serde_json::Value::Null, None, Broken(100_000));
        assert!(
            matches!(
                result,
                Err(ArchiveError::WriteEntry { .. } | ArchiveError::Finish { .. })
            ),
            "{result:?}"
        );
    }
}

#[test]
fn a_file_grown_since_planning_stays_within_the_total_cap() {
    let (_dir, root) = scratch();
    put(&root, "l/new.log", &[b'n'; 1000], 10);
    let old = put(&root, "l/old.log", &[b'o'; 500], 20);
    let mut spec = spec(&[abs(&root, "l")]);
    spec.max_total_bytes = Some(1500);
    // Between planning and reading, the newest file doubles with different bytes.
    let hook = |p: &Path| {
        if p.ends_with("new.log") {
            let mut file = File::options().append(true).open(p).unwrap();
            file.write_all(&[b'N'; 1000]).unwrap();
        }
    };
    let hooks = Hooks {
        before_open: Some(&hook),
        after_open: None,
        ..Hooks::default()
    };
    let built = build_hooked(&spec, &[], None, &hooks);
    let new = built.record(&abs(&root, "l/new.log"));
    assert_eq!(new.original_size, 2000);
    assert_eq!(new.size, 1000, "the budget owed to older files is kept");
    assert_eq!(
        new.truncated,
        Some(Truncation {
            reason: TruncateReason::MaxTotalBytes,
            from_offset: 1000
        })
    );
    assert_eq!(
        built.entry(&name(&root, "l/new.log")).unwrap().data,
        vec![b'N'; 1000],
        "the tail, where logs grow"
    );
    assert_eq!(built.record(&old.to_string_lossy()).size, 500);
    assert_eq!(built.outcome.content_bytes, 1500);
}

#[test]
fn a_dangling_root_is_reported_and_a_missing_one_is_not() {
    let (_dir, root) = scratch();
    symlink(root.join("gone"), root.join("dangling")).unwrap();
    put(&root, "l/a.log", b"a", 10);
    let built = build(&spec(&[
        abs(&root, "dangling"),
        abs(&root, "missing"),
        abs(&root, "l"),
    ]));
    let errors = &built.manifest().errors;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, abs(&root, "dangling"));
    assert_eq!(errors[0].operation, "resolve");
    assert_eq!(built.file_names(), vec![name(&root, "l/a.log")]);
}

fn decode_base64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// Sets a file's mtime `age_secs` in the past.
fn age(path: &Path, age_secs: u64) {
    let mtime = SystemTime::now() - Duration::from_secs(age_secs);
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

#[test]
fn names_that_are_not_utf8_are_exact_in_the_manifest() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let (_dir, root) = scratch();
    let dir = root.join("l");
    fs::create_dir_all(&dir).unwrap();
    // Two names that differ only in bytes that are not UTF-8: both read `log-\u{FFFD}.txt`.
    let ff = dir.join(OsStr::from_bytes(b"log-\xff.txt"));
    let fe = dir.join(OsStr::from_bytes(b"log-\xfe.txt"));
    fs::write(&ff, b"first").unwrap();
    fs::write(&fe, b"second").unwrap();
    age(&ff, 10);
    age(&fe, 20);
    let link = dir.join(OsStr::from_bytes(b"link-\xfd"));
    symlink(OsStr::from_bytes(b"target-\xfc"), &link).unwrap();
    let socket = dir.join(OsStr::from_bytes(b"sock-\xfb"));
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let vanishing = dir.join(OsStr::from_bytes(b"gone-\xfa.log"));
    fs::write(&vanishing, b"gone").unwrap();
    age(&vanishing, 30);
    put(&root, "l/plain.log", b"plain", 40);
    let bytes_of = |p: &Path| p.as_os_str().as_bytes().to_vec();

    let hook = |p: &Path| {
        if p == vanishing {
            fs::remove_file(p).unwrap();
        }
    };
    let hooks = Hooks {
        before_open: Some(&hook),
        ..Hooks::default()
    };
    let built = build_hooked(&spec(&[abs(&root, "l")]), &[], None, &hooks);
    let m = built.manifest();

    let files: Vec<&FileRecord> = m.files.iter().filter(|f| f.path_base64.is_some()).collect();
    assert_eq!(files.len(), 2, "{:?}", m.files);
    assert_eq!(files[0].path, files[1].path, "the readable forms collide");
    assert_eq!(
        decode_base64(files[0].path_base64.as_deref().unwrap()),
        bytes_of(&ff)
    );
    assert_eq!(
        decode_base64(files[1].path_base64.as_deref().unwrap()),
        bytes_of(&fe)
    );
    for (record, data) in [(files[0], &b"first"[..]), (files[1], &b"second"[..])] {
        let exact = decode_base64(record.path_base64.as_deref().unwrap());
        let entry = built
            .entries
            .iter()
            .find(|e| e.raw_path == exact[1..])
            .unwrap_or_else(|| panic!("no tar entry named {exact:?}"));
        assert_eq!(entry.data, data);
        assert_eq!(record.sha256, sha(data));
    }

    let plain = built.record(&abs(&root, "l/plain.log"));
    assert_eq!(plain.path_base64, None);
    let json = serde_json::to_value(m).unwrap();
    let plain_json = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == abs(&root, "l/plain.log"))
        .unwrap();
    assert!(plain_json.get("path_base64").is_none(), "only when needed");

    let link_record = &m.symlinks[0];
    assert_eq!(
        decode_base64(link_record.path_base64.as_deref().unwrap()),
        bytes_of(&link)
    );
    assert_eq!(
        decode_base64(link_record.target_base64.as_deref().unwrap()),
        b"target-\xfc"
    );
    let skipped = &m.skipped[0];
    assert_eq!(skipped.reason, SkipReason::SpecialFile);
    assert_eq!(
        decode_base64(skipped.path_base64.as_deref().unwrap()),
        bytes_of(&socket)
    );
    let error = &m.errors[0];
    assert_eq!(error.operation, "open");
    assert_eq!(
        decode_base64(error.path_base64.as_deref().unwrap()),
        bytes_of(&vanishing)
    );

    // The plan, and files skipped by the writer, name them exactly too.
    let plan = plan(&spec(&[abs(&root, "l")])).unwrap();
    let planned: Vec<Vec<u8>> = plan
        .files
        .iter()
        .filter_map(|f| f.path_base64.as_deref().map(decode_base64))
        .collect();
    assert_eq!(planned, vec![bytes_of(&ff), bytes_of(&fe)]);
    let deadline = Instant::now() + Duration::from_secs(2);
    let wait = |_: &Path| std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    let hooks = Hooks {
        after_open: Some(&wait),
        ..Hooks::default()
    };
    let late = build_hooked(&spec(&[abs(&root, "l")]), &[], Some(deadline), &hooks);
    let deadline_skipped: Vec<Vec<u8>> = late
        .manifest()
        .skipped
        .iter()
        .filter(|s| s.reason == SkipReason::Deadline)
        .filter_map(|s| s.path_base64.as_deref().map(decode_base64))
        .collect();
    assert_eq!(deadline_skipped, vec![bytes_of(&fe)]);
}

#[test]
fn only_the_newest_max_files_are_kept_and_the_skipped_list_is_bounded() {
    let (_dir, root) = scratch();
    let count: u64 = 1200;
    for i in 0..count {
        // File i is i seconds old and i + 1 bytes long.
        put(
            &root,
            &format!("l/{i:04}.log"),
            &vec![b'x'; i as usize + 1],
            i + 1,
        );
    }
    for i in 0..3 {
        symlink("0000.log", root.join(format!("l/link-{i}"))).unwrap();
    }
    let mut spec = spec(&[abs(&root, "l")]);
    spec.max_files = 100;
    let newest: Vec<String> = (0..100)
        .map(|i| abs(&root, &format!("l/{i:04}.log")))
        .collect();
    let skipped_bytes: u64 = (100..count).map(|i| i + 1).sum();

    let plan = plan(&spec).unwrap();
    let planned: Vec<&str> = plan.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(planned, newest);
    assert_eq!(plan.skipped_count, count - 100);
    assert_eq!(plan.skipped_bytes, skipped_bytes);
    assert_eq!(plan.skipped.len(), MAX_LISTED);
    assert!(
        plan.skipped
            .iter()
            .all(|s| s.reason == SkipReason::MaxFiles)
    );
    assert_eq!(plan.symlinks.len(), 3);
    assert!(
        plan.to_string()
            .contains("and 100 more skipped, not listed")
    );

    let built = build(&spec);
    let m = built.manifest();
    let archived: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(archived, newest);
    assert_eq!(m.skipped.len(), MAX_LISTED);
    assert_eq!(m.totals.skipped, count - 100);
    assert_eq!(m.totals.skipped_unlisted, count - 100 - MAX_LISTED as u64);
    assert_eq!(m.totals.skipped_bytes, skipped_bytes);
    for record in &m.skipped {
        let i: u64 = record.path[record.path.len() - 8..record.path.len() - 4]
            .parse()
            .unwrap();
        assert!(i >= 100, "{record:?} is among the newest");
        assert_eq!(record.size, i + 1);
    }

    // Links are capped at the same number.
    let mut few = spec.clone();
    few.max_files = 2;
    let built = build(&few);
    assert_eq!(built.manifest().symlinks.len(), 2);
    assert_eq!(built.manifest().files.len(), 2);
    let links_left_out = built
        .manifest()
        .skipped
        .iter()
        .filter(|s| s.reason == SkipReason::MaxFiles && s.path.contains("link-"))
        .count();
    assert_eq!(links_left_out, 1);
    assert_eq!(built.manifest().totals.skipped, count - 2 + 1);
}

#[test]
fn a_million_sockets_would_not_bloat_the_manifest() {
    let (_dir, root) = scratch();
    fs::create_dir_all(root.join("run")).unwrap();
    let sockets = MAX_LISTED + 100;
    for i in 0..sockets {
        std::os::unix::net::UnixListener::bind(root.join(format!("run/{i:05}.sock"))).unwrap();
    }
    put(&root, "run/app.log", b"log", 10);
    let built = build(&spec(&[abs(&root, "run")]));
    let m = built.manifest();
    assert_eq!(m.skipped.len(), MAX_LISTED, "the list is bounded");
    assert_eq!(m.totals.skipped, sockets as u64, "the total is exact");
    assert_eq!(m.totals.skipped_unlisted, 100);
    assert_eq!(built.file_names(), vec![name(&root, "run/app.log")]);
}

#[test]
fn entries_found_through_several_sources_are_taken_once() {
    let (_dir, root) = scratch();
    put(&root, "l/a.log", b"a", 10);
    put(&root, "l/sub/b.log", b"b", 20);
    put(&root, "l/skip/c.log", b"c", 30);
    put(&root, "l/x.txt", b"x", 40);
    symlink(root.join("l"), root.join("alias")).unwrap();
    let mut spec = spec(&[
        abs(&root, "l/*.log"),
        abs(&root, "alias"),
        abs(&root, "l/**/*.log"),
        abs(&root, "l/sub/b.log"),
    ]);
    spec.exclude = vec![abs(&root, "l/skip")];
    let built = build(&spec);
    let mut names = built.file_names();
    names.sort();
    // `alias` resolves to `l`: what `l/*.log` took keeps its name, the rest comes by `alias`.
    let mut expected = vec![
        name(&root, "l/a.log"),
        name(&root, "alias/sub/b.log"),
        name(&root, "alias/x.txt"),
    ];
    expected.sort();
    assert_eq!(names, expected);
    let matched: Vec<u64> = built.manifest().sources.iter().map(|s| s.matched).collect();
    assert_eq!(matched, vec![1, 3, 2, 1]);
}

/// Calls that never return, made to happen in the reader and walker threads (debug builds).
#[cfg(debug_assertions)]
mod stalls {
    use super::super::reader::{CHUNK_BYTES, Hang};
    use super::*;

    const HUNG: Duration = Duration::from_secs(3600);

    #[test]
    fn a_read_that_stalls_is_zero_padded_and_the_archive_goes_on() {
        let (_dir, root) = scratch();
        let stuck: Vec<u8> = (0..1_000_000u32).map(|i| (i % 239) as u8).collect();
        put(&root, "l/1-new.log", &vec![b'n'; 100_000], 10);
        let stuck_path = put(&root, "l/2-stuck.log", &stuck, 20);
        put(&root, "l/3-old.log", &vec![b'o'; 50_000], 30);
        let hang = |p: &Path| {
            p.ends_with("2-stuck.log").then_some(Hang::Read {
                after: CHUNK_BYTES as u64,
                duration: HUNG,
            })
        };
        let hooks = Hooks {
            stall_timeout: Some(Duration::from_millis(300)),
            hang: Some(&hang),
            ..Hooks::default()
        };
        let started = Instant::now();
        let deadline = started + Duration::from_secs(60);
        let built = build_hooked(&spec(&[abs(&root, "l")]), &[], Some(deadline), &hooks);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not held by the read"
        );

        assert_eq!(
            built.file_names(),
            ["1-new", "2-stuck", "3-old"].map(|n| name(&root, &format!("l/{n}.log")))
        );
        let entry = built.entry(&name(&root, "l/2-stuck.log")).unwrap();
        assert_eq!(entry.data.len(), 1_000_000, "the size in the header");
        assert_eq!(entry.data[..CHUNK_BYTES], stuck[..CHUNK_BYTES]);
        assert!(entry.data[CHUNK_BYTES..].iter().all(|&b| b == 0));
        let record = built.record(&stuck_path.to_string_lossy());
        assert_eq!(
            record.truncated,
            Some(Truncation {
                reason: TruncateReason::Stalled,
                from_offset: CHUNK_BYTES as u64
            })
        );
        assert_eq!(record.padding, 1_000_000 - CHUNK_BYTES as u64);
        assert_eq!(record.sha256, sha(&entry.data));
        let errors = &built.manifest().errors;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, stuck_path.to_string_lossy());
        assert_eq!(errors[0].operation, "read");
        assert!(errors[0].error.starts_with("stalled:"), "{:?}", errors[0]);

        // The files before and after it are whole: the next one was read by a new thread.
        let totals = &built.manifest().totals;
        assert_eq!(totals.stalled, 1);
        assert_eq!(totals.truncated, 1);
        assert!(!totals.deadline_reached);
        assert_eq!(
            built.entry(&name(&root, "l/3-old.log")).unwrap().data,
            vec![b'o'; 50_000]
        );
        assert_eq!(
            built.entry(&name(&root, "l/1-new.log")).unwrap().data,
            vec![b'n'; 100_000]
        );
    }

    #[test]
    fn a_read_hung_at_the_deadline_ends_the_archive_by_the_deadline() {
        let (_dir, root) = scratch();
        let stuck = put(&root, "l/1-stuck.log", &vec![b's'; 700_000], 10);
        put(&root, "l/2-older.log", b"older", 20);
        let hang = |p: &Path| {
            p.ends_with("1-stuck.log").then_some(Hang::Read {
                after: 0,
                duration: HUNG,
            })
        };
        let hooks = Hooks {
            // Longer than the time to the deadline: the deadline cuts the wait.
            stall_timeout: Some(Duration::from_secs(60)),
            hang: Some(&hang),
            ..Hooks::default()
        };
        let started = Instant::now();
        let deadline = started + Duration::from_millis(1500);
        let built = build_hooked(&spec(&[abs(&root, "l")]), &[], Some(deadline), &hooks);
        let late = Instant::now().saturating_duration_since(deadline);
        assert!(
            late < Duration::from_millis(500),
            "{late:?} past the deadline"
        );

        let record = built.record(&stuck.to_string_lossy());
        assert_eq!(
            record.truncated,
            Some(Truncation {
                reason: TruncateReason::Deadline,
                from_offset: 0
            }),
            "cut by the deadline before the stall timeout"
        );
        assert_eq!(record.padding, 700_000);
        assert_eq!(
            skipped(&built),
            vec![(abs(&root, "l/2-older.log"), SkipReason::Deadline)]
        );
        assert!(built.manifest().totals.deadline_reached);
    }

    #[test]
    fn a_short_deadline_shortens_the_stall_timeout_so_the_rest_still_goes_in() {
        let (_dir, root) = scratch();
        let stuck = put(&root, "l/1-stuck.log", &vec![b's'; 100_000], 10);
        put(&root, "l/2-older.log", b"older", 20);
        let hang = |p: &Path| {
            p.ends_with("1-stuck.log").then_some(Hang::Read {
                after: 0,
                duration: HUNG,
            })
        };
        let hooks = Hooks {
            hang: Some(&hang),
            ..Hooks::default()
        };
        let started = Instant::now();
        // 4 s to the deadline: the stall timeout is 1 s, not 5 s.
        let deadline = started + Duration::from_secs(4);
        let built = build_hooked(&spec(&[abs(&root, "l")]), &[], Some(deadline), &hooks);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let record = built.record(&stuck.to_string_lossy());
        assert_eq!(
            record.truncated.as_ref().map(|t| t.reason),
            Some(TruncateReason::Stalled)
        );
        assert_eq!(
            built.entry(&name(&root, "l/2-older.log")).unwrap().data,
            b"older"
        );
        assert!(!built.manifest().totals.deadline_reached);
    }

    #[test]
    fn the_stall_timeout_is_a_quarter_of_the_time_within_bounds() {
        let now = Instant::now();
        assert_eq!(stall_timeout(now, None), STALL_TIMEOUT);
        let quarter = |secs: u64| stall_timeout(now, Some(now + Duration::from_secs(secs)));
        assert_eq!(
            quarter(80),
            STALL_TIMEOUT,
            "a spot interruption's two minutes"
        );
        assert_eq!(quarter(8), Duration::from_secs(2));
        assert_eq!(quarter(1), MIN_STALL_TIMEOUT);
        assert_eq!(stall_timeout(now, Some(now)), MIN_STALL_TIMEOUT);
    }

    #[test]
    fn an_open_that_stalls_leaves_the_file_out() {
        let (_dir, root) = scratch();
        put(&root, "l/1-new.log", b"new", 10);
        let stuck = put(&root, "l/2-stuck.log", b"stuck", 20);
        put(&root, "l/3-old.log", b"old", 30);
        let hang = |p: &Path| p.ends_with("2-stuck.log").then_some(Hang::Open(HUNG));
        let hooks = Hooks {
            stall_timeout: Some(Duration::from_millis(300)),
            hang: Some(&hang),
            ..Hooks::default()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let built = build_hooked(&spec(&[abs(&root, "l")]), &[], Some(deadline), &hooks);
        assert_eq!(
            built.file_names(),
            vec![name(&root, "l/1-new.log"), name(&root, "l/3-old.log")]
        );
        assert_eq!(
            skipped(&built),
            vec![(stuck.to_string_lossy().into_owned(), SkipReason::Stalled)]
        );
        let error = &built.manifest().errors[0];
        assert_eq!(error.operation, "open");
        assert!(error.error.starts_with("stalled:"), "{error:?}");
        assert_eq!(built.manifest().totals.stalled, 1);
    }

    #[test]
    fn a_walk_that_stalls_keeps_what_it_found_and_goes_on() {
        let (_dir, root) = scratch();
        put(&root, "first/a.log", b"a", 10);
        put(&root, "nfs/top.log", b"top", 20);
        put(&root, "nfs/dead/never.log", b"never", 30);
        put(&root, "fine/b.log", b"b", 40);
        let hooks = Hooks {
            stall_timeout: Some(Duration::from_millis(300)),
            hang_walk: Some((root.join("nfs/dead"), HUNG)),
            ..Hooks::default()
        };
        let sources = [abs(&root, "first"), abs(&root, "nfs"), abs(&root, "fine")];
        let deadline = Instant::now() + Duration::from_secs(60);
        let built = build_hooked(&spec(&sources), &[], Some(deadline), &hooks);
        let m = built.manifest();

        let names = built.file_names();
        assert!(names.contains(&name(&root, "first/a.log")));
        assert!(
            names.contains(&name(&root, "fine/b.log")),
            "the next source is walked"
        );
        assert!(!names.contains(&name(&root, "nfs/dead/never.log")));
        assert_eq!(m.sources[0].incomplete, None);
        assert_eq!(
            m.sources[1].incomplete,
            Some(IncompleteWalk {
                reason: WalkStop::Stalled,
                path: abs(&root, "nfs/dead"),
                path_base64: None,
            })
        );
        assert_eq!(m.sources[2].incomplete, None);
        assert!(m.totals.walk_incomplete);
        let error = m
            .errors
            .iter()
            .find(|e| e.path == abs(&root, "nfs/dead"))
            .unwrap();
        assert_eq!(error.operation, "walk");
        assert!(error.error.starts_with("stalled:"), "{error:?}");
    }

    #[test]
    fn the_walk_gets_a_share_of_the_deadline() {
        let (_dir, root) = scratch();
        put(&root, "slow/a.log", b"a", 10);
        put(&root, "slow/deep/b.log", b"b", 20);
        put(&root, "later/c.log", b"c", 30);
        let hooks = Hooks {
            // Not a stall: slow, but within the stall timeout.
            stall_timeout: Some(Duration::from_secs(60)),
            hang_walk: Some((root.join("slow/deep"), HUNG)),
            ..Hooks::default()
        };
        let started = Instant::now();
        let deadline = started + Duration::from_secs(4);
        let sources = [abs(&root, "slow"), abs(&root, "later")];
        let built = build_hooked(&spec(&sources), &[], Some(deadline), &hooks);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let m = built.manifest();
        assert_eq!(
            m.sources[0]
                .incomplete
                .as_ref()
                .map(|i| (i.reason, i.path.clone())),
            Some((WalkStop::Deadline, abs(&root, "slow/deep")))
        );
        assert_eq!(
            m.sources[1]
                .incomplete
                .as_ref()
                .map(|i| (i.reason, i.path.clone())),
            Some((WalkStop::Deadline, abs(&root, "later"))),
            "not started"
        );
        assert!(!built.file_names().contains(&name(&root, "later/c.log")));
        assert!(m.totals.walk_incomplete);
        assert!(
            m.errors.is_empty(),
            "a deadline is not an error: {:?}",
            m.errors
        );
    }
}

/// Swaps of directories and files while an archive is built.
mod race;
