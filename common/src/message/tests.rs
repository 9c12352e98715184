//! Variants written here (the fixtures are tested in `tests/fixtures.rs`): field order, optional
//! fields missing, placeholders, envelopes inside envelopes, and malformed input.

use serde_json::json;

use super::*;

fn parse_json(value: serde_json::Value) -> Result<Parsed, ParseError> {
    parse(value.to_string().as_bytes())
}

fn lifecycle(parsed: &Parsed) -> &LifecycleAction {
    match &parsed.message {
        Message::LifecycleAction(action) => action,
        other => panic!("expected a lifecycle action, got {other:?}"),
    }
}

fn terminate_event() -> serde_json::Value {
    json!({
        "version": "0", "id": "e1", "detail-type": "EC2 Instance-terminate Lifecycle Action",
        "source": "aws.autoscaling", "account": "123456789012", "time": "2026-11-22T10:00:00Z",
        "region": "eu-west-1", "resources": ["arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:x:autoScalingGroupName/web"],
        "detail": {
            "LifecycleActionToken": "tok-1", "AutoScalingGroupName": "web",
            "LifecycleHookName": "drain", "EC2InstanceId": "i-0abc",
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
            "Origin": "AutoScalingGroup", "Destination": "EC2"
        }
    })
}

fn direct_notification() -> serde_json::Value {
    json!({
        "Service": "AWS Auto Scaling", "Time": "2026-11-22T10:00:00.000Z", "RequestId": "r-1",
        "LifecycleActionToken": "tok-2", "AccountId": "123456789012", "AutoScalingGroupName": "web",
        "LifecycleHookName": "drain", "EC2InstanceId": "i-0def",
        "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING"
    })
}

#[test]
fn eventbridge_lifecycle_action_reads_every_field() {
    let parsed = parse_json(terminate_event()).unwrap();
    assert_eq!(parsed.format, Format::EventBridge);
    let action = lifecycle(&parsed);
    assert_eq!(action.transition, Transition::Terminating);
    assert_eq!(action.instance_id, "i-0abc");
    assert_eq!(action.asg, "web");
    assert_eq!(action.hook, "drain");
    assert_eq!(action.token, "tok-1");
    assert_eq!(action.origin, Some(LifecycleEndpoint::AutoScalingGroup));
    assert_eq!(action.destination, Some(LifecycleEndpoint::Ec2));
    assert_eq!(action.metadata, None);
    assert_eq!(action.account.as_deref(), Some("123456789012"));
    assert!(action.ends_instance());
}

#[test]
fn field_order_and_whitespace_do_not_matter() {
    let text = r#"
        {"detail": {"LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
                    "EC2InstanceId": "i-0abc", "LifecycleHookName": "drain",
                    "AutoScalingGroupName": "web", "LifecycleActionToken": "tok-1"},
         "source": "aws.autoscaling",
         "detail-type": "EC2 Instance-terminate Lifecycle Action"}
    "#;
    let parsed = parse(text.as_bytes()).unwrap();
    assert_eq!(lifecycle(&parsed).instance_id, "i-0abc");
}

#[test]
fn optional_envelope_fields_may_be_missing_or_placeholders() {
    let mut event = terminate_event();
    let object = event.as_object_mut().unwrap();
    object.remove("account");
    object.remove("resources");
    object.insert("time".into(), json!("yyyy-mm-ddThh:mm:ssZ"));
    object.insert("region".into(), json!(null));
    let parsed = parse_json(event).unwrap();
    let action = lifecycle(&parsed);
    assert_eq!(action.account, None);
    assert_eq!(action.time.as_deref(), Some("yyyy-mm-ddThh:mm:ssZ"));
}

#[test]
fn unknown_origin_is_kept_not_rejected() {
    let mut event = terminate_event();
    event["detail"]["Destination"] = json!("SomewhereNew");
    let parsed = parse_json(event).unwrap();
    assert_eq!(
        lifecycle(&parsed).destination,
        Some(LifecycleEndpoint::Other("SomewhereNew".into()))
    );
}

#[test]
fn missing_required_field_names_it() {
    let mut event = terminate_event();
    event["detail"]
        .as_object_mut()
        .unwrap()
        .remove("EC2InstanceId");
    let err = parse_json(event).unwrap_err();
    assert_eq!(err.to_string(), "detail.EC2InstanceId: missing");

    let mut event = terminate_event();
    event["detail"]["LifecycleActionToken"] = json!(42);
    let err = parse_json(event).unwrap_err();
    assert_eq!(
        err.to_string(),
        "detail.LifecycleActionToken: expected a string, found a number"
    );

    let mut event = terminate_event();
    event["detail"]["AutoScalingGroupName"] = json!("  ");
    assert_eq!(
        parse_json(event).unwrap_err().to_string(),
        "detail.AutoScalingGroupName: empty"
    );
}

#[test]
fn transition_must_match_detail_type() {
    let mut event = terminate_event();
    event["detail"]["LifecycleTransition"] = json!("autoscaling:EC2_INSTANCE_LAUNCHING");
    let err = parse_json(event).unwrap_err();
    assert!(
        err.to_string().contains("does not match detail-type"),
        "{err}"
    );
}

#[test]
fn direct_notification_with_metadata_and_without_origin() {
    let mut note = direct_notification();
    note["NotificationMetadata"] = json!("{\"drain\":\"web\"}");
    let parsed = parse_json(note).unwrap();
    assert_eq!(parsed.format, Format::Direct);
    let action = lifecycle(&parsed);
    assert_eq!(action.metadata.as_deref(), Some("{\"drain\":\"web\"}"));
    assert_eq!(action.origin, None);
    assert_eq!(action.token, "tok-2");
}

#[test]
fn direct_notification_with_unknown_transition_is_an_error() {
    let mut note = direct_notification();
    note["LifecycleTransition"] = json!("autoscaling:EC2_INSTANCE_EXPLODING");
    let err = parse_json(note).unwrap_err();
    assert!(
        err.to_string().starts_with("LifecycleTransition: expected"),
        "{err}"
    );
}

#[test]
fn other_auto_scaling_notifications_are_ignored() {
    let note = json!({
        "Service": "AWS Auto Scaling", "Event": "autoscaling:EC2_INSTANCE_LAUNCH",
        "AutoScalingGroupName": "web", "EC2InstanceId": "i-0abc"
    });
    let parsed = parse_json(note).unwrap();
    assert_eq!(parsed.message.kind(), "ignored");
}

fn sns_envelope(message: &str) -> serde_json::Value {
    json!({
        "Type": "Notification", "MessageId": "m-1",
        "TopicArn": "arn:aws:sns:eu-west-1:123456789012:lifecycle",
        "Message": message, "Timestamp": "2026-11-22T10:00:00.000Z",
        "SignatureVersion": "1", "Signature": "x", "SigningCertURL": "x", "UnsubscribeURL": "x"
    })
}

#[test]
fn sns_envelope_around_a_direct_notification() {
    let parsed = parse_json(sns_envelope(&direct_notification().to_string())).unwrap();
    assert_eq!(parsed.format, Format::Sns);
    assert_eq!(lifecycle(&parsed).instance_id, "i-0def");
}

#[test]
fn sns_envelope_around_an_eventbridge_event() {
    let parsed = parse_json(sns_envelope(&terminate_event().to_string())).unwrap();
    assert_eq!(parsed.format, Format::Sns);
    assert_eq!(lifecycle(&parsed).instance_id, "i-0abc");
}

#[test]
fn sns_envelope_around_key_value_text() {
    let text = "Service: AWS Auto Scaling\nTime: 2026-11-22T10:00:00Z\nEvent: autoscaling:TEST_NOTIFICATION\nAutoScalingGroupName: web\n";
    let parsed = parse_json(sns_envelope(text)).unwrap();
    assert_eq!(parsed.format, Format::Sns);
    assert_eq!(parsed.message.kind(), "test_notification");
}

#[test]
fn error_inside_sns_envelope_says_where() {
    let mut note = direct_notification();
    note.as_object_mut().unwrap().remove("LifecycleHookName");
    let err = parse_json(sns_envelope(&note.to_string())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Message (SNS) > LifecycleHookName: missing"
    );
}

#[test]
fn sns_subscription_confirmation_is_ignored() {
    let mut envelope = sns_envelope("You have chosen to subscribe");
    envelope["Type"] = json!("SubscriptionConfirmation");
    let parsed = parse_json(envelope).unwrap();
    assert_eq!(parsed.message.kind(), "ignored");
}

#[test]
fn nesting_is_bounded() {
    let mut message = terminate_event().to_string();
    for _ in 0..6 {
        message = sns_envelope(&message).to_string();
    }
    let err = parse(message.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("nested more than"), "{err}");
}

#[test]
fn key_value_text_needs_the_auto_scaling_service() {
    assert!(parse(b"Service: Something Else\nEvent: x").is_err());
    assert!(parse(b"just some words").is_err());
}

#[test]
fn health_scheduled_change_lists_instances() {
    let event = json!({
        "version": "0", "id": "h1", "detail-type": "AWS Health Event", "source": "aws.health",
        "account": "123456789012", "time": "2026-11-22T10:00:00Z", "region": "eu-west-1",
        "resources": ["i-0aaa", "i-0bbb"],
        "detail": {
            "eventArn": "arn:aws:health:eu-west-1::event/EC2/AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED/x",
            "service": "EC2", "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
            "eventTypeCategory": "scheduledChange", "startTime": "Sat, 05 Dec 2026 12:00:00 GMT",
            "affectedEntities": [{"entityValue": "i-0aaa"}, {"entityValue": "i-0bbb"}]
        }
    });
    let parsed = parse_json(event.clone()).unwrap();
    let Message::ScheduledChange(change) = &parsed.message else {
        panic!("{parsed:?}")
    };
    assert_eq!(change.instance_ids, vec!["i-0aaa", "i-0bbb"]);
    assert_eq!(
        change.event_type_code,
        "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED"
    );

    let mut no_entities = event.clone();
    no_entities["detail"]
        .as_object_mut()
        .unwrap()
        .remove("affectedEntities");
    let parsed = parse_json(no_entities).unwrap();
    let Message::ScheduledChange(change) = &parsed.message else {
        panic!("{parsed:?}")
    };
    assert_eq!(
        change.instance_ids,
        vec!["i-0aaa", "i-0bbb"],
        "taken from resources"
    );

    let mut issue = event;
    issue["detail"]["eventTypeCategory"] = json!("issue");
    assert_eq!(parse_json(issue).unwrap().message.kind(), "ignored");
}

#[test]
fn instance_state_change() {
    let event = json!({
        "detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
        "detail": {"instance-id": "i-0abc", "state": "terminated"}
    });
    let parsed = parse_json(event).unwrap();
    assert_eq!(
        parsed.message,
        Message::InstanceStateChange(InstanceStateChange {
            instance_id: "i-0abc".into(),
            state: "terminated".into()
        })
    );
}

#[test]
fn refresh_checkpoint_as_numbers_or_strings() {
    let mut event = json!({
        "detail-type": "EC2 Auto Scaling Instance Refresh Checkpoint Reached",
        "source": "aws.autoscaling",
        "detail": {"InstanceRefreshId": "r-1", "AutoScalingGroupName": "web",
                   "CheckpointPercentage": 50, "CheckpointDelay": "600"}
    });
    let Message::InstanceRefresh(refresh) = parse_json(event.clone()).unwrap().message else {
        panic!()
    };
    assert_eq!(
        (refresh.checkpoint_percentage, refresh.checkpoint_delay_secs),
        (Some(50), Some(600))
    );
    event["detail"]["CheckpointDelay"] = json!("soon");
    let err = parse_json(event).unwrap_err();
    assert!(
        err.to_string().starts_with("detail.CheckpointDelay"),
        "{err}"
    );
}

#[test]
fn unknown_sources_and_detail_types_are_ignored_with_a_reason() {
    let other_source = json!({"detail-type": "Object Created", "source": "aws.s3", "detail": {}});
    let Message::Ignored(ignored) = parse_json(other_source).unwrap().message else {
        panic!()
    };
    assert_eq!(
        ignored.reason,
        "events from source `aws.s3` are not acted on"
    );
    assert_eq!(ignored.source.as_deref(), Some("aws.s3"));

    let other_type = json!({"detail-type": "EC2 Instance Launch Successful",
                            "source": "aws.autoscaling", "detail": {}});
    assert_eq!(parse_json(other_type).unwrap().message.kind(), "ignored");
}

#[test]
fn cloudtrail_create_image_with_tags_and_errors() {
    let event = json!({
        "detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2", "account": "111122223333",
        "detail": {
            "eventSource": "ec2.amazonaws.com", "eventName": "CreateImage", "awsRegion": "eu-west-1",
            "requestParameters": {
                "instanceId": "i-0abc", "name": "web-2026-11-22",
                "tagSpecificationSet": {"items": [
                    {"resourceType": "image", "tags": [{"key": "lifeguard:refresh", "value": "web"}]},
                    {"resourceType": "snapshot", "tags": [{"key": "ignored", "value": "x"}]}
                ]}
            },
            "responseElements": {"imageId": "ami-0new"}
        }
    });
    let Message::CreateImageCall(call) = parse_json(event.clone()).unwrap().message else {
        panic!()
    };
    assert_eq!(call.image_id.as_deref(), Some("ami-0new"));
    assert_eq!(
        call.tags,
        vec![Tag {
            key: "lifeguard:refresh".into(),
            value: "web".into()
        }]
    );
    assert_eq!(
        call.account.as_deref(),
        Some("111122223333"),
        "from the envelope"
    );

    let mut failed = event;
    failed["detail"]["errorCode"] = json!("Client.InvalidInstanceID.NotFound");
    let Message::Ignored(ignored) = parse_json(failed).unwrap().message else {
        panic!()
    };
    assert!(
        ignored
            .reason
            .contains("failed with Client.InvalidInstanceID.NotFound")
    );
}

#[test]
fn create_group_with_a_mixed_instances_policy() {
    let record = json!({
        "eventSource": "autoscaling.amazonaws.com", "eventName": "CreateAutoScalingGroup",
        "requestParameters": {
            "autoScalingGroupName": "web",
            "mixedInstancesPolicy": {"launchTemplate": {"launchTemplateSpecification":
                {"launchTemplateName": "web-lt", "version": "$Default"}}}
        }
    });
    let parsed = parse_json(record).unwrap();
    assert_eq!(parsed.format, Format::Direct);
    let Message::CreateAutoScalingGroupCall(call) = parsed.message else {
        panic!()
    };
    assert_eq!(
        call.launch_template,
        Some(LaunchTemplateRef {
            id: None,
            name: Some("web-lt".into()),
            version: Some("$Default".into())
        })
    );
}

#[test]
fn agent_report_round_trips_through_the_event_shape() {
    let report = AgentReport {
        phase: ReportPhase::DrainFinished,
        instance_id: "i-0abc".into(),
        asg: Some("web".into()),
        hook: Some("drain".into()),
        token: Some("tok-1".into()),
        reason: Some("scale_in".into()),
        seq: 7,
        archive: Some(ArchiveSummary {
            bucket: "logs".into(),
            key: "web/i-0abc/x.tar.gz".into(),
            bytes: 1234,
            sha256: "ab".repeat(32),
            files: 3,
            skipped_files: 0,
            manifest_sha256: Some("cd".repeat(32)),
        }),
        steps: vec![StepReport {
            name: "stop-nginx".into(),
            outcome: StepOutcome::Succeeded,
            exit_code: Some(0),
            duration_ms: 812,
        }],
        result: Some("CONTINUE".into()),
        error: None,
        stage: Some("completing".into()),
        report_interval_secs: Some(30),
        completion: Some(CompletionReport::Completed),
        lifecycle_heartbeat_at: Some("2026-11-22T09:59:00Z".into()),
    };
    let event = report.to_event("id-1", "2026-11-22T10:00:00Z", "eu-west-1", "123456789012");
    assert_eq!(event["detail-type"], "Drain Finished");
    assert_eq!(event["source"], AGENT_SOURCE);
    let parsed = parse_json(event).unwrap();
    assert_eq!(parsed.message, Message::AgentReport(report));
}

#[test]
fn every_report_phase_round_trips_and_reports_from_older_agents_still_parse() {
    for phase in [
        ReportPhase::DrainStarted,
        ReportPhase::DrainProgress,
        ReportPhase::DrainHeartbeat,
        ReportPhase::DrainFinished,
        ReportPhase::DrainFailed,
        ReportPhase::LaunchProgress,
        ReportPhase::LaunchReady,
        ReportPhase::LaunchFailed,
    ] {
        let mut report = AgentReport::new(phase, "i-0abc");
        report.completion = Some(CompletionReport::Failed);
        let event = report.to_event("id", "2026-11-22T10:00:00Z", "eu-west-1", "1");
        assert_eq!(event["detail"]["completion"], "failed");
        assert_eq!(
            parse_json(event).unwrap().message,
            Message::AgentReport(report)
        );
    }
    // An agent of the previous version promises no cadence and says nothing of its completion.
    let event = json!({
        "detail-type": "Drain Finished", "source": "lifeguard.agent",
        "detail": {"instance_id": "i-0abc", "seq": 3, "result": "CONTINUE"}
    });
    let Message::AgentReport(report) = parse_json(event).unwrap().message else {
        panic!()
    };
    assert_eq!(
        (report.report_interval_secs, report.completion),
        (None, None)
    );
    assert!(report.phase.is_final() && !report.phase.is_launch());
}

#[test]
fn agent_report_tolerates_unknown_fields_but_needs_an_instance() {
    let event = json!({
        "detail-type": "Drain Started", "source": "lifeguard.agent",
        "detail": {"instance_id": "i-0abc", "added_in_a_later_version": true}
    });
    let Message::AgentReport(report) = parse_json(event).unwrap().message else {
        panic!()
    };
    assert_eq!(report.phase, ReportPhase::DrainStarted);

    let event = json!({"detail-type": "Drain Started", "source": "lifeguard.agent", "detail": {}});
    let err = parse_json(event).unwrap_err();
    assert!(err.to_string().contains("instance_id"), "{err}");
}

#[test]
fn commands_and_unknown_commands() {
    let event = json!({
        "detail-type": "Drill", "source": "lifeguard.command",
        "detail": {"asg": "web", "instance_ids": ["i-0abc"], "decrement": true}
    });
    let Message::Command(command) = parse_json(event).unwrap().message else {
        panic!()
    };
    assert_eq!(command.name, CommandName::Drill);
    assert_eq!(command.asg.as_deref(), Some("web"));
    assert_eq!(command.instance_ids, vec!["i-0abc"]);
    assert_eq!(command.params["decrement"], json!(true));

    let event = json!({"detail-type": "Dril", "source": "lifeguard.command", "detail": {}});
    let Message::Ignored(ignored) = parse_json(event).unwrap().message else {
        panic!()
    };
    assert!(
        ignored.reason.starts_with("unknown command `Dril`"),
        "{}",
        ignored.reason
    );
}

#[test]
fn malformed_input_is_an_error_that_says_what_is_wrong() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "message is empty"),
        (b"   \n", "message is empty"),
        (b"\xff\xfe", "message is not UTF-8 text"),
        (b"{\"source\": ", "message is not valid JSON"),
        (b"[1, 2]", "expected a JSON object, found an array"),
        (b"42", "expected a JSON object, found a number"),
        (b"\"text\"", "expected a JSON object, found a string"),
        (b"{\"hello\": \"world\"}", "unrecognised message"),
        (b"{}", "top-level keys: none"),
        (
            b"{\"source\": \"aws.ec2\", \"detail-type\": \"EC2 AMI State Change\"}",
            "detail: missing",
        ),
        (
            b"{\"source\": \"aws.ec2\", \"detail-type\": \"EC2 AMI State Change\", \"detail\": []}",
            "detail: expected an object, found an array",
        ),
        (
            b"{\"Records\": [{\"Sns\": 1}, {\"Sns\": 2}]}",
            "expected exactly one SNS record, found 2",
        ),
    ];
    for (input, expected) in cases {
        let err = parse(input).unwrap_err().to_string();
        assert!(
            err.contains(expected),
            "{:?}: {err}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn imds_bodies() {
    use imds::*;
    assert_eq!(
        parse_target_lifecycle_state("InService\n").unwrap(),
        TargetLifecycleState::InService
    );
    assert_eq!(
        parse_target_lifecycle_state("Warmed:Stopped").unwrap(),
        TargetLifecycleState::Warmed("Warmed:Stopped".into())
    );
    assert!(parse_target_lifecycle_state("<html>oops</html>").is_err());
    assert!(parse_target_lifecycle_state("Warmed:").is_err());
    assert!(parse_target_lifecycle_state("").is_err());

    let spot =
        parse_spot_instance_action(r#"{"time": "2026-11-22T10:02:00Z", "action": "hibernate"}"#)
            .unwrap();
    assert_eq!(spot.action, Some(SpotAction::Hibernate));
    assert!(
        parse_spot_instance_action(r#"{"action": "explode", "time": "2026-11-22T10:02:00Z"}"#)
            .is_err()
    );
    assert!(parse_spot_instance_action(r#"{"action": "terminate", "time": "soon"}"#).is_err());
    assert!(parse_spot_instance_action("garbage").is_err());

    assert!(parse_spot_termination_time("2026-11-22T10:02:00.123Z").is_ok());
    assert!(parse_spot_termination_time("2026-11-22 10:02:00").is_err());
    assert!(parse_rebalance_recommendation(r#"{"noticeTime": "2026-11-22T10:00:00Z"}"#).is_ok());
    assert!(parse_rebalance_recommendation(r#"{"notice": "x"}"#).is_err());

    assert_eq!(parse_maintenance_events("[]").unwrap(), vec![]);
    let events = parse_maintenance_events(
        r#"[{"NotBefore": "21 Jan 2026 09:00:43 GMT", "Code": "system-reboot",
            "Description": "scheduled reboot", "EventId": "instance-event-0d59937288b749b32",
            "NotAfter": "21 Jan 2026 09:17:23 GMT", "State": "active"}]"#,
    )
    .unwrap();
    assert_eq!(events[0].code, "system-reboot");
    assert!(parse_maintenance_events("{").is_err());
}
