//! The controller as its container runs it: the image's health check is the binary's own
//! `probe`, which finds the health port from the same configuration the service reads.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use lifeguard_e2e::agent::workspace_binary;
use lifeguard_e2e::controller::scene;
use lifeguard_e2e::repo_root;

fn probe(config: &Path, args: &[&str]) -> Output {
    Command::new(workspace_binary("lifeguard-controller"))
        .arg("--config")
        .arg(config)
        .arg("probe")
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_images_health_check_asks_the_running_controller_and_fails_once_it_is_gone() {
    // The command the image runs, word for word.
    let dockerfile =
        std::fs::read_to_string(repo_root().join("packaging/container/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("CMD [\"/usr/local/bin/lifeguard-controller\", \"probe\"]"),
        "{dockerfile}"
    );

    let scene = scene(1, 3600, &[]).await;
    let mut controller = scene.start_controller("ctl", "");
    controller.wait_ready().await;
    let (_, healthz) = controller.get("/healthz").await;

    let healthy = probe(&controller.config, &[]);
    assert!(healthy.status.success(), "{healthy:?}");
    assert_eq!(
        String::from_utf8_lossy(&healthy.stdout).trim(),
        healthz.trim(),
        "the probe prints what /healthz answered"
    );
    let ready = probe(&controller.config, &["--path", "/readyz"]);
    assert!(ready.status.success(), "{ready:?}");
    // A path the controller does not serve is not health.
    let missing = probe(&controller.config, &["--path", "/nothing"]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));

    controller.process.kill9();
    let gone = probe(&controller.config, &["--timeout-secs", "2"]);
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    let said = String::from_utf8_lossy(&gone.stderr);
    assert!(
        said.contains(&format!("127.0.0.1:{}", controller.port)) && said.contains("connecting"),
        "{said}"
    );
}
