//! The local demo: an emulator on loopback, a group with a terminate hook, a scale-in, and the
//! lifecycle event read off the queue and explained by `lifeguard-controller explain`.

// Demo tooling built on the test harness, which fails loudly rather than carrying on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use lifeguard_common::message::Transition;
use lifeguard_e2e::fleet::{self, Hook};
use lifeguard_e2e::{Emulator, eventually};
use serde_json::json;

const GROUP: &str = "demo-web";
const HOOK: &str = "lifeguard-drain";
const WAIT: Duration = Duration::from_secs(30);

/// `lifeguard-controller` from the same build as this demo.
fn controller_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("LIFEGUARD_CONTROLLER") {
        return PathBuf::from(path);
    }
    let me = std::env::current_exe().unwrap();
    me.with_file_name("lifeguard-controller")
}

fn explain(body: &str) -> String {
    let binary = controller_binary();
    let mut child = Command::new(&binary)
        .args(["explain", "--pretty", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", binary.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "explain failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn step(text: &str) {
    println!("\n==> {text}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    step("starting the AWS emulator (moto + lifeguard's lifecycle hooks and IMDS)");
    let emulator = Emulator::start().await;
    println!("    endpoint {}", emulator.endpoint());
    let c = emulator.clients().await;

    let image = fleet::any_image(&c).await;
    let template = fleet::launch_template(&c, "demo-web", &image).await;
    let queue = fleet::queue(&c, "lifeguard-events").await;
    fleet::rule_to_queue(
        &c,
        "lifeguard-lifecycle",
        json!({"source": ["aws.autoscaling"],
               "detail-type": ["EC2 Instance-launch Lifecycle Action",
                               "EC2 Instance-terminate Lifecycle Action"]}),
        &queue,
    )
    .await;
    step(&format!(
        "group {GROUP}: 3 instances of {template} ({image}), terminate hook {HOOK} \
         (heartbeat 300 s, default ABANDON); EventBridge rule -> queue lifeguard-events"
    ));
    fleet::group(
        &c,
        GROUP,
        &template,
        3,
        &[Hook {
            name: HOOK,
            transition: Transition::TERMINATING,
            heartbeat_timeout_secs: 300,
            default_result: "ABANDON",
            target_arn: None,
        }],
    )
    .await;
    for (id, state) in fleet::instances(&c, GROUP).await {
        println!("    {id}  {state}");
    }

    let victim = fleet::instances(&c, GROUP).await.remove(0).0;
    step(&format!(
        "scale-in: TerminateInstanceInAutoScalingGroup {victim} (decrement desired capacity)"
    ));
    c.autoscaling
        .terminate_instance_in_auto_scaling_group()
        .instance_id(&victim)
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .unwrap();
    let state = fleet::lifecycle_state(&c, &victim)
        .await
        .unwrap_or_default();
    let (_, imds) = emulator
        .imds_get(&victim, "autoscaling/target-lifecycle-state")
        .await;
    println!(
        "    {victim}: {state}; its IMDS autoscaling/target-lifecycle-state says {}",
        imds.trim()
    );

    step("the lifecycle event on the queue, through `lifeguard-controller explain`");
    let body = eventually("the lifecycle event", WAIT, || async {
        let received = c
            .sqs
            .receive_message()
            .queue_url(&queue.url)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        received
            .messages()
            .first()
            .and_then(|m| m.body().map(str::to_string))
    })
    .await;
    print!("{}", explain(&body));

    step(&format!(
        "CompleteLifecycleAction CONTINUE by instance id for {victim}"
    ));
    c.autoscaling
        .complete_lifecycle_action()
        .auto_scaling_group_name(GROUP)
        .lifecycle_hook_name(HOOK)
        .instance_id(&victim)
        .lifecycle_action_result("CONTINUE")
        .send()
        .await
        .unwrap();
    eventually("the instance to terminate", WAIT, || async {
        (fleet::ec2_state(&c, &victim).await == "terminated").then_some(())
    })
    .await;
    println!("    {victim}: terminated");
    for (id, state) in fleet::instances(&c, GROUP).await {
        println!("    {id}  {state}");
    }
    println!("\ndone: the emulator stops now.");
}
