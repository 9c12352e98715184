//! The agent under its unit's confinement: an unprivileged user holding only the capabilities
//! the unit grants (`setpriv` applies them as systemd would), its drain steps run through the
//! socket-activated step runner as root. What a test cannot check without systemd as PID 1
//! (the mount namespace, the system-call filter) is checked on the unit file itself
//! (`systemd_units.rs`).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use lifeguard_common::message::StepOutcome;
use lifeguard_e2e::agent::workspace_binary;
use lifeguard_e2e::agent::{AgentProcess, config_for};
use lifeguard_e2e::drain::{GROUP, archived_path, stage, unpack};
use lifeguard_e2e::step_runner::{
    CONFINED_ID, StepRunner, confinement_of_agent_unit, syscalls_after_exec,
    syscalls_allowed_by_agent_unit, traced_into,
};

const WAIT: Duration = Duration::from_secs(60);

/// The `Uid:` and `CapEff:` lines of a running process.
fn identity_of(pid: u32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_string()
    };
    (field("Uid:"), field("CapEff:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confined_agent_drains_through_the_step_runner_with_stop_unit_at_awss_default_hook() {
    // AWS's default hook: 3600 s heartbeat timeout.
    let stage = stage(1, 3600).await;
    let victim = stage.instances[0].clone();

    // A log only root may read, as many are.
    let secret = stage.logs.join("auth.log");
    std::fs::write(&secret, "root only\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The agent's StateDirectory: its own, mode 0700.
    let state = stage.path("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(CONFINED_ID), Some(CONFINED_ID)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();

    // The runner's systemctl stands in for systemd's; the agent's PATH does not have it.
    let bin = stage.path("bin");
    std::fs::create_dir(&bin).unwrap();
    let calls = stage.path("systemctl-calls");
    std::fs::write(
        bin.join("systemctl"),
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\ncase \"$1\" in is-active) echo inactive; exit 3;; esac\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("systemctl"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let runner = StepRunner::start(
        stage.dir.path(),
        &stage.dir.path().join("agent.toml"),
        CONFINED_ID,
        &[("PATH", &path), ("RUNNER_MARK", "runner")],
    );
    let idle = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let idle_port = idle.local_addr().unwrap().port();

    let extra = format!(
        r#"{archive}
[drain]
step_runner = "{socket}"

[[drain.steps]]
name = "deregister"
shell = "echo via=$RUNNER_MARK uid=$(id -u) id=$LIFEGUARD_INSTANCE_ID"

[[drain.steps]]
name = "stop-web"
stop_unit = "web.service"

[[drain.steps]]
name = "connections"
wait_connections = [{idle_port}]
timeout_secs = 10
"#,
        archive = stage.archive_config(),
        socket = runner.socket.display(),
    );
    let config = config_for(&stage.emulator, &victim, &state, &extra);
    // Traced, so the system calls of the drain can be held against the unit's filter.
    let trace = stage.path("agent.strace");
    let mut wrapper = traced_into(&trace);
    wrapper.extend(confinement_of_agent_unit());
    let agent = AgentProcess::start_wrapped(stage.dir.path(), &config, &[], &wrapper);
    agent.wait_for_log("lifeguard-agent watching", WAIT).await;
    // The agent itself (strace's child, setpriv having become the agent): nobody, with the one
    // capability the unit grants (CAP_DAC_READ_SEARCH is bit 2).
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", agent.pid())).unwrap();
    let agent_pid: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(
        identity_of(agent_pid),
        (
            format!("{CONFINED_ID}\t{CONFINED_ID}\t{CONFINED_ID}\t{CONFINED_ID}"),
            "0000000000000004".to_string()
        )
    );

    stage.terminate(&victim).await;
    agent.wait_for_log("drain finished", WAIT).await;
    stage.wait_terminated(&victim, WAIT).await;

    assert_eq!(
        stage.completions(&victim).await,
        vec![(200, "CONTINUE".to_string())],
        "runner: {}\nagent: {}",
        runner.log(),
        agent.log()
    );
    let finished = stage.reports().await.pop().unwrap();
    assert!(
        finished
            .steps
            .iter()
            .all(|s| s.outcome == StepOutcome::Succeeded),
        "{:?}\nrunner: {}",
        finished.steps,
        runner.log()
    );
    // Two steps went through the runner; waiting for connections stayed in the agent.
    assert_eq!(runner.connections(), 2);
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "stop web.service\nis-active web.service\n"
    );

    let (_, archive) = stage.archive_of(&victim, "scale_in").await;
    let unpacked = unpack(&archive);
    let step_log = |name: &str| {
        unpacked
            .files
            .iter()
            .find(|(path, _)| path.starts_with("lifeguard/steps/") && path.ends_with(name))
            .map(|(_, bytes)| String::from_utf8_lossy(bytes).to_string())
            .unwrap_or_else(|| panic!("{name} in {:?}", unpacked.files.keys()))
    };
    // Run by the runner, as root, with the agent's event variables.
    assert_eq!(
        step_log("deregister.log"),
        format!("via=runner uid=0 id={victim}\n")
    );
    assert!(
        step_log("stop-web.log").contains("web.service is inactive"),
        "{}",
        step_log("stop-web.log")
    );
    // The root-only log, read through the capability.
    assert_eq!(
        unpacked
            .files
            .get(&archived_path(&secret))
            .map(Vec::as_slice),
        Some(&b"root only\n"[..])
    );
    assert!(
        stage
            .keys(&format!("lifeguard/{GROUP}/{victim}/"))
            .await
            .len()
            == 2
    );

    // Every system call of the watch, the drain, the archive and the upload is one the unit's
    // SystemCallFilter lets through (there, another would fail with EPERM).
    let used = syscalls_after_exec(
        &std::fs::read_to_string(&trace).unwrap(),
        &workspace_binary("lifeguard-agent"),
    );
    for expected in ["connect", "openat", "sendto", "clone3"] {
        assert!(used.contains(expected), "{expected} in {used:?}");
    }
    let allowed = syscalls_allowed_by_agent_unit();
    let refused: Vec<&String> = used.difference(&allowed).collect();
    assert!(refused.is_empty(), "outside SystemCallFilter: {refused:?}");
}
