//! The agent's packages as an image bake installs them: `scripts/package.sh` builds the .deb
//! and the .rpm around this build's binary; the .deb is installed, upgraded over an edited
//! configuration, removed and purged in a scratch root with its maintainer scripts run
//! (`DPKG_ROOT`); the .rpm's files, flags and scriptlets are read back with `rpm`.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use lifeguard_e2e::agent::workspace_binary;
use lifeguard_e2e::repo_root;

const UNITS: [&str; 3] = [
    "lifeguard-agent.service",
    "lifeguard-step.socket",
    "lifeguard-step@.service",
];

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?}: {text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds both packages into `out`: (the .deb, the .rpm).
fn packages(out: &Path) -> (PathBuf, PathBuf) {
    let binary = workspace_binary("lifeguard-agent");
    let listed = run(
        "bash",
        &[
            repo_root().join("scripts/package.sh").to_str().unwrap(),
            "--binary",
            binary.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--fast",
        ],
    );
    let mut lines = listed.lines().map(PathBuf::from);
    (lines.next().unwrap(), lines.next().unwrap())
}

/// An empty dpkg database under `root`.
fn scratch_root(root: &Path) {
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.join(file), "").unwrap();
    }
}

fn dpkg(root: &Path, args: &[&str]) -> String {
    let root_arg = format!("--root={}", root.display());
    let mut all = vec![
        root_arg.as_str(),
        "--force-script-chrootless",
        // systemd is the one dependency, and the scratch root has no packages.
        "--force-depends",
        "--log=/dev/null",
    ];
    all.extend_from_slice(args);
    run("dpkg", &all)
}

#[test]
fn the_deb_installs_upgrades_over_an_edited_configuration_and_purges_in_a_scratch_root() {
    let dir = tempfile::tempdir().unwrap();
    let (deb, _) = packages(&dir.path().join("out"));

    let info = run("dpkg-deb", &["--field", deb.to_str().unwrap()]);
    assert!(info.contains("Package: lifeguard-agent\n"), "{info}");
    assert!(info.contains("Depends: systemd (>= 250)\n"), "{info}");
    let contents = run("dpkg-deb", &["--contents", deb.to_str().unwrap()]);
    for line in contents.lines() {
        assert!(line.contains(" root/root "), "owned by root: {line}");
    }
    let mode_of = |path: &str| {
        contents
            .lines()
            .find(|l| l.ends_with(&format!(".{path}")))
            .unwrap_or_else(|| panic!("{path} in {contents}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(mode_of("/usr/bin/lifeguard-agent"), "-rwxr-xr-x");
    assert_eq!(mode_of("/etc/lifeguard/agent.toml"), "-rw-r-----");
    let control = dir.path().join("control");
    run(
        "dpkg-deb",
        &[
            "--control",
            deb.to_str().unwrap(),
            control.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/lifeguard/agent.toml\n"
    );

    // Install: the files, the user, the units enabled for the next boot.
    let root = dir.path().join("root");
    scratch_root(&root);
    dpkg(&root, &["--install", deb.to_str().unwrap()]);
    for unit in UNITS {
        assert_eq!(
            std::fs::read(root.join("usr/lib/systemd/system").join(unit)).unwrap(),
            std::fs::read(repo_root().join("systemd").join(unit)).unwrap(),
            "{unit} as in the repository"
        );
    }
    let installed = root.join("usr/bin/lifeguard-agent");
    assert_eq!(
        std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let user = passwd
        .lines()
        .find(|l| l.starts_with("lifeguard:"))
        .unwrap_or_else(|| panic!("{passwd}"));
    assert!(
        user.ends_with(":/var/lib/lifeguard:/usr/sbin/nologin"),
        "{user}"
    );
    let uid: u32 = user.split(':').nth(2).unwrap().parse().unwrap();
    assert!(uid < 1000, "a system user: {user}");
    let enabled = [
        "etc/systemd/system/multi-user.target.wants/lifeguard-agent.service",
        "etc/systemd/system/sockets.target.wants/lifeguard-step.socket",
    ];
    for link in enabled {
        assert!(root.join(link).is_symlink(), "{link}");
    }
    // The installed configuration is valid as it stands, for the installed binary.
    let config = root.join("etc/lifeguard/agent.toml");
    let validated = run(
        installed.to_str().unwrap(),
        &["--config", config.to_str().unwrap(), "validate"],
    );
    assert!(validated.contains("valid"), "{validated}");

    // Upgrade over the operator's edit: the edit stays, the user is not made twice.
    let edited = format!(
        "{}\n[[drain.steps]]\nname = \"flush\"\nrun = [\"true\"]\n",
        std::fs::read_to_string(&config).unwrap()
    );
    std::fs::write(&config, &edited).unwrap();
    dpkg(
        &root,
        &["--force-confold", "--install", deb.to_str().unwrap()],
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert_eq!(
        passwd
            .lines()
            .filter(|l| l.starts_with("lifeguard:"))
            .count(),
        1,
        "{passwd}"
    );

    // Remove: units disabled, configuration kept. Purge: configuration and state gone.
    std::fs::create_dir_all(root.join("var/lib/lifeguard")).unwrap();
    std::fs::write(root.join("var/lib/lifeguard/agent-state.json"), "{}").unwrap();
    dpkg(&root, &["--remove", "lifeguard-agent"]);
    for link in enabled {
        assert!(!root.join(link).exists(), "{link} after remove");
    }
    assert!(!installed.exists());
    assert!(config.exists(), "a conffile stays until purge");
    dpkg(&root, &["--purge", "lifeguard-agent"]);
    assert!(!config.exists());
    assert!(!root.join("var/lib/lifeguard").exists());
}

#[test]
fn the_rpm_holds_the_same_files_with_its_configuration_kept_on_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let (_, rpm) = packages(&dir.path().join("out"));
    let rpm = rpm.to_str().unwrap();
    let name = run(
        "rpm",
        &["-qp", "--qf", "%{NAME} %{VERSION} %{RELEASE}", rpm],
    );
    assert!(name.starts_with("lifeguard-agent "), "{name}");
    let requires = run("rpm", &["-qp", "--requires", rpm]);
    assert!(requires.contains("systemd >= 250"), "{requires}");

    // path size mtime digest mode owner group isconfig isdoc ...
    let dump = run("rpm", &["-qp", "--dump", rpm]);
    let entry = |path: &str| -> Vec<String> {
        dump.lines()
            .find(|l| l.starts_with(&format!("{path} ")))
            .unwrap_or_else(|| panic!("{path} in {dump}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let binary = entry("/usr/bin/lifeguard-agent");
    assert_eq!(binary[4], "0100755");
    assert_eq!((binary[5].as_str(), binary[6].as_str()), ("root", "root"));
    let config = entry("/etc/lifeguard/agent.toml");
    assert_eq!(config[4], "0100640");
    assert_eq!(config[7], "1", "a %config file");
    assert_eq!(
        run("rpm", &["-qp", "--configfiles", rpm]).trim(),
        "/etc/lifeguard/agent.toml"
    );
    // noreplace: an edited configuration survives an upgrade.
    let flags = run(
        "rpm",
        &["-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", rpm],
    );
    assert!(flags.contains("/etc/lifeguard/agent.toml cn"), "{flags}");
    for unit in UNITS {
        entry(&format!("/usr/lib/systemd/system/{unit}"));
    }
    entry("/usr/lib/sysusers.d/lifeguard-agent.conf");

    let scripts = run("rpm", &["-qp", "--scripts", rpm]);
    let post = scripts
        .split("preuninstall")
        .next()
        .unwrap_or_else(|| panic!("{scripts}"));
    assert!(
        post.contains("systemd-sysusers lifeguard-agent.conf"),
        "{scripts}"
    );
    assert!(
        post.contains("systemctl enable lifeguard-step.socket lifeguard-agent.service"),
        "{scripts}"
    );
    // Stopped only on erase ($1 == 0), never on upgrade.
    assert!(scripts.contains("if [ \"$1\" -eq 0 ]; then"), "{scripts}");
}
