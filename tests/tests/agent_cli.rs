//! The agent's one-shot commands as an operator runs them: `validate`, `drain --dry-run` and
//! `archive --output` need no AWS at all; `archive --upload` ships the logs now.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use lifeguard_e2e::agent::{config_for, workspace_binary};
use lifeguard_e2e::drain::{BUCKET, GROUP, archived_path, sha256_hex, stage, unpack};
use serde_json::Value;

fn agent(config: &Path, args: &[&str]) -> Output {
    Command::new(workspace_binary("lifeguard-agent"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn validate_dry_run_and_archive_output_touch_no_aws() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(logs.join("worker")).unwrap();
    std::fs::write(logs.join("app.log"), "started\nserving\n".repeat(1000)).unwrap();
    std::fs::write(logs.join("worker/jobs.log"), "job 1 done\n").unwrap();
    // Nothing listens on port 9: any AWS or IMDS call would fail the command.
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"[aws]
region = "eu-west-1"
endpoint_url = "http://127.0.0.1:9"

[imds]
base_url = "http://127.0.0.1:9"

[[drain.steps]]
name = "stop-web"
stop_unit = "web.service"

[[drain.steps]]
name = "flush"
run = ["/usr/bin/flush-queue", "--all"]
on_failure = "abandon"

[archive]
paths = ["{logs}"]

[upload]
bucket = "fleet-logs"
"#,
            logs = logs.display()
        ),
    )
    .unwrap();

    let validated = agent(&config, &["validate"]);
    assert!(validated.status.success(), "{validated:?}");
    assert!(text(&validated.stdout).contains("valid"));

    let planned = agent(&config, &["drain", "--dry-run"]);
    assert!(planned.status.success(), "{planned:?}");
    let plan = text(&planned.stdout);
    let stop = plan.find("1. stop-web").unwrap_or_else(|| panic!("{plan}"));
    let flush = plan.find("2. flush").unwrap_or_else(|| panic!("{plan}"));
    assert!(stop < flush, "{plan}");
    assert!(plan.contains("s3://fleet-logs/"), "{plan}");
    for name in ["app.log", "worker/jobs.log"] {
        assert!(
            plan.contains(&logs.join(name).display().to_string()),
            "{plan}"
        );
    }

    let archive = dir.path().join("out.tar.gz");
    let archived = agent(&config, &["archive", "--output", archive.to_str().unwrap()]);
    assert!(archived.status.success(), "{archived:?}");
    assert!(text(&archived.stdout).contains("2 files"), "{archived:?}");
    let unpacked = unpack(&std::fs::read(&archive).unwrap());
    let manifest: Value = serde_json::from_slice(&unpacked.files["MANIFEST.json"]).unwrap();
    for name in ["app.log", "worker/jobs.log"] {
        let path = logs.join(name);
        let original = std::fs::read(&path).unwrap();
        assert_eq!(unpacked.files.get(&archived_path(&path)), Some(&original));
        let entry = manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"].as_str() == path.to_str())
            .unwrap();
        assert_eq!(entry["sha256"], sha256_hex(&original).as_str());
    }

    // Neither --output nor --upload: refused by the argument parser.
    let neither = agent(&config, &["archive"]);
    assert_eq!(neither.status.code(), Some(2), "{neither:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_upload_ships_the_logs_now_without_touching_the_lifecycle() {
    let stage = stage(1, 60).await;
    let instance = stage.instances[0].clone();
    let config = stage.dir.path().join("agent.toml");
    std::fs::write(
        &config,
        config_for(
            &stage.emulator,
            &instance,
            stage.dir.path(),
            &stage.archive_config(),
        ),
    )
    .unwrap();
    let config_path = config.clone();
    let output = tokio::task::spawn_blocking(move || agent(&config_path, &["archive", "--upload"]))
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed = text(&output.stdout);

    let keys = stage.keys(&format!("lifeguard/{GROUP}/{instance}/")).await;
    let key = keys
        .iter()
        .find(|k| k.ends_with("-manual.tar.gz"))
        .unwrap_or_else(|| panic!("{keys:?}"))
        .clone();
    assert!(
        printed.contains(&format!("s3://{BUCKET}/{key}")),
        "{printed}"
    );
    assert!(keys.contains(&format!("{key}.manifest.json")), "{keys:?}");
    let unpacked = unpack(&stage.object(&key).await);
    let original = std::fs::read(stage.logs.join("app.log")).unwrap();
    assert_eq!(
        unpacked
            .files
            .get(&archived_path(&stage.logs.join("app.log"))),
        Some(&original)
    );
    assert!(
        stage
            .emulator
            .calls("autoscaling", "CompleteLifecycleAction", None)
            .await
            .is_empty()
    );
    assert!(
        stage
            .emulator
            .calls("autoscaling", "RecordLifecycleActionHeartbeat", None)
            .await
            .is_empty()
    );
}

#[test]
fn order_units_orders_every_stopped_unit_after_the_agent_and_refuses_a_forged_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    let units = dir.path().join("units");
    std::fs::write(
        &config,
        "[[drain.steps]]\nname = \"stop-app\"\nstop_unit = \"app.service\"\n\n\
         [[drain.steps]]\nname = \"flush\"\nrun = [\"true\"]\n\n\
         [[drain.steps]]\nname = \"stop-worker\"\nstop_unit = \"worker@1.service\"\n",
    )
    .unwrap();
    let ordered = agent(
        &config,
        &["order-units", "--unit-dir", units.to_str().unwrap()],
    );
    assert!(ordered.status.success(), "{ordered:?}");
    let drop_in = units.join("lifeguard-agent.service.d/50-drained-units.conf");
    let text_of = std::fs::read_to_string(&drop_in).unwrap();
    assert!(
        text_of.contains("\n[Unit]\nBefore=app.service worker@1.service\n"),
        "{text_of}"
    );
    // systemd reads it: the drop-in beside a copy of the unit verifies clean.
    let unit_text =
        std::fs::read_to_string(lifeguard_e2e::repo_root().join("systemd/lifeguard-agent.service"))
            .unwrap()
            .replace(
                "/usr/bin/lifeguard-agent",
                workspace_binary("lifeguard-agent").to_str().unwrap(),
            );
    std::fs::write(units.join("lifeguard-agent.service"), unit_text).unwrap();
    for unit in ["lifeguard-step.socket", "lifeguard-step@.service"] {
        std::fs::copy(
            lifeguard_e2e::repo_root().join("systemd").join(unit),
            units.join(unit),
        )
        .unwrap();
    }
    let verified = Command::new("systemd-analyze")
        .args(["verify", "./lifeguard-agent.service"])
        .current_dir(&units)
        .output()
        .unwrap();
    // The ordered units do not exist on this machine; that is the only complaint allowed.
    let complaints = text(&verified.stderr);
    assert!(
        complaints
            .lines()
            .all(|l| l.contains("app.service") || l.contains("worker@1.service")),
        "{complaints}"
    );

    // A unit name that would add a line to the drop-in is refused before anything is written.
    std::fs::write(
        &config,
        "[[drain.steps]]\nname = \"stop\"\nstop_unit = \"app.service\\nExecStartPre=/tmp/x\"\n",
    )
    .unwrap();
    let refused = agent(
        &config,
        &["order-units", "--unit-dir", units.to_str().unwrap()],
    );
    assert_eq!(refused.status.code(), Some(78), "{refused:?}");
    assert!(text(&refused.stderr).contains("not a unit name"));
    assert!(
        std::fs::read_to_string(&drop_in)
            .unwrap()
            .contains("Before=app.service worker@1.service")
    );

    // No step stops a unit any more: the drop-in goes.
    std::fs::write(
        &config,
        "[[drain.steps]]\nname = \"flush\"\nrun = [\"true\"]\n",
    )
    .unwrap();
    let cleared = agent(
        &config,
        &["order-units", "--unit-dir", units.to_str().unwrap()],
    );
    assert!(cleared.status.success(), "{cleared:?}");
    assert!(!drop_in.exists());
}
