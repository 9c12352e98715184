"""Terminate lifecycle hooks: plain Terminating, Terminating:Wait, notifications, completion,
heartbeats, timeouts."""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError

from helpers import (
    ACCOUNT,
    REGION,
    drain,
    ec2_state,
    group_desc,
    instances,
    make_group,
    queue_with_rule,
    states_are,
    terminate_hook,
    wait_until,
)

TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"


def test_terminate_with_hook_waits_notifies_and_completes_by_instance_id(emu, asg, ec2, sqs, events):
    url = queue_with_rule(sqs, events)
    make_group(asg, ec2, desired=2, hooks=[terminate_hook(NotificationMetadata="meta-1")])
    first, second = sorted(instances(asg))
    victim = first

    asg.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=True)

    assert instances(asg)[victim].startswith("Terminating")
    wait_until(lambda: instances(asg)[victim] == "Terminating:Wait", timeout=5)
    described = asg.describe_auto_scaling_instances(InstanceIds=[victim])["AutoScalingInstances"][0]
    assert described["LifecycleState"] == "Terminating:Wait"
    assert group_desc(asg)["DesiredCapacity"] == 1
    assert emu.metadata(victim, "/latest/meta-data/autoscaling/target-lifecycle-state") == (200, "Terminated")
    assert emu.metadata(second, "/latest/meta-data/autoscaling/target-lifecycle-state") == (200, "InService")

    (event,) = wait_until(lambda: drain(sqs, url), what="lifecycle event")
    assert event["source"] == "aws.autoscaling"
    assert event["detail-type"] == "EC2 Instance-terminate Lifecycle Action"
    assert event["account"] == ACCOUNT
    assert event["region"] == REGION
    assert event["resources"] == [group_desc(asg)["AutoScalingGroupARN"]]
    assert event["time"].endswith("Z")
    detail = event["detail"]
    assert list(detail) == [
        "LifecycleActionToken",
        "AutoScalingGroupName",
        "LifecycleHookName",
        "EC2InstanceId",
        "LifecycleTransition",
        "NotificationMetadata",
        "Origin",
        "Destination",
    ]
    assert detail["EC2InstanceId"] == victim
    assert detail["AutoScalingGroupName"] == "web"
    assert detail["LifecycleHookName"] == "drain"
    assert detail["LifecycleTransition"] == TERMINATING
    assert detail["NotificationMetadata"] == "meta-1"
    assert (detail["Origin"], detail["Destination"]) == ("AutoScalingGroup", "EC2")
    assert len(detail["LifecycleActionToken"]) == 36

    asg.complete_lifecycle_action(
        AutoScalingGroupName="web", LifecycleHookName="drain", InstanceId=victim, LifecycleActionResult="CONTINUE"
    )
    assert instances(asg).get(victim) in ("Terminating:Proceed", None)
    wait_until(lambda: victim not in instances(asg), what="instance leaves the group")
    assert ec2_state(ec2, victim) == "terminated"
    assert set(instances(asg)) == {second}

    with pytest.raises(ClientError) as err:
        asg.complete_lifecycle_action(
            AutoScalingGroupName="web", LifecycleHookName="drain", InstanceId=victim, LifecycleActionResult="CONTINUE"
        )
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert err.value.response["Error"]["Message"] == f"No active Lifecycle Action found with instance ID {victim}"


def test_complete_by_token_and_twice_fails(emu, asg, ec2, sqs, events):
    url = queue_with_rule(sqs, events)
    make_group(asg, ec2, desired=1, hooks=[terminate_hook()])
    (victim,) = instances(asg)
    asg.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=True)
    (event,) = wait_until(lambda: drain(sqs, url), timeout=5)
    token = event["detail"]["LifecycleActionToken"]
    kwargs = dict(AutoScalingGroupName="web", LifecycleHookName="drain", LifecycleActionToken=token)
    asg.complete_lifecycle_action(LifecycleActionResult="ABANDON", **kwargs)
    with pytest.raises(ClientError) as err:
        asg.complete_lifecycle_action(LifecycleActionResult="CONTINUE", **kwargs)
    assert err.value.response["Error"]["Message"] == f"No active Lifecycle Action found with token {token}"
    # ABANDON on a terminating instance still terminates it.
    wait_until(lambda: ec2_state(ec2, victim) == "terminated")


def test_without_decrement_a_replacement_launches_while_waiting(emu, asg, ec2):
    make_group(asg, ec2, desired=2, hooks=[terminate_hook()])
    before = set(instances(asg))
    victim = sorted(before)[0]
    asg.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=False)
    # The replacement launches as soon as the victim stops counting (plain Terminating).
    states = instances(asg)
    assert states[victim].startswith("Terminating")
    new = set(states) - before
    assert len(new) == 1 and states[new.pop()] == "InService"
    assert group_desc(asg)["DesiredCapacity"] == 2
    wait_until(lambda: instances(asg)[victim] == "Terminating:Wait", timeout=5)


def test_decrement_below_min_is_refused(emu, asg, ec2):
    make_group(asg, ec2, desired=1, min_size=1, hooks=[terminate_hook()])
    (victim,) = instances(asg)
    with pytest.raises(ClientError) as err:
        asg.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=True)
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert instances(asg)[victim] == "InService"


def test_direct_sqs_notification_and_test_notification(emu, asg, ec2, sqs):
    url = sqs.create_queue(QueueName="hook-target")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    make_group(asg, ec2, desired=1)
    asg.put_lifecycle_hook(
        AutoScalingGroupName="web",
        LifecycleHookName="drain",
        LifecycleTransition=TERMINATING,
        NotificationTargetARN=arn,
        RoleARN=f"arn:aws:iam::{ACCOUNT}:role/hook-role",
        HeartbeatTimeout=60,
    )
    (test_msg,) = wait_until(lambda: drain(sqs, url))
    assert test_msg["Event"] == "autoscaling:TEST_NOTIFICATION"
    assert test_msg["Service"] == "AWS Auto Scaling"
    assert test_msg["AutoScalingGroupName"] == "web"
    assert test_msg["AutoScalingGroupARN"] == group_desc(asg)["AutoScalingGroupARN"]
    assert set(test_msg) == {"AccountId", "RequestId", "AutoScalingGroupARN", "AutoScalingGroupName", "Service", "Event", "Time"}

    hook = asg.describe_lifecycle_hooks(AutoScalingGroupName="web")["LifecycleHooks"][0]
    assert hook["NotificationTargetARN"] == arn
    assert hook["RoleARN"] == f"arn:aws:iam::{ACCOUNT}:role/hook-role"
    assert hook["HeartbeatTimeout"] == 60
    assert hook["GlobalTimeout"] == 6000
    assert "NotificationMetadata" not in hook

    (victim,) = instances(asg)
    asg.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=True)
    (msg,) = wait_until(lambda: drain(sqs, url), timeout=5)
    assert list(msg) == [
        "Origin",
        "LifecycleHookName",
        "Destination",
        "AccountId",
        "RequestId",
        "LifecycleTransition",
        "AutoScalingGroupName",
        "Service",
        "Time",
        "EC2InstanceId",
        "LifecycleActionToken",
    ]
    assert msg["EC2InstanceId"] == victim
    assert msg["LifecycleTransition"] == TERMINATING
    assert (msg["Origin"], msg["Destination"]) == ("AutoScalingGroup", "EC2")
    assert msg["AccountId"] == ACCOUNT
    assert msg["Time"].endswith("Z") and "." in msg["Time"]


def test_hook_target_must_exist(emu, asg, ec2):
    make_group(asg, ec2, desired=0)
    with pytest.raises(ClientError) as err:
        asg.put_lifecycle_hook(
            AutoScalingGroupName="web",
            LifecycleHookName="drain",
            LifecycleTransition=TERMINATING,
            NotificationTargetARN=f"arn:aws:sqs:{REGION}:{ACCOUNT}:missing",
            RoleARN=f"arn:aws:iam::{ACCOUNT}:role/r",
        )
    assert "Unable to publish test message" in err.value.response["Error"]["Message"]


def test_sns_target_delivers_envelope_to_subscribed_queue(emu, asg, ec2, sqs):
    sns = emu.client("sns")
    topic = sns.create_topic(Name="hooks")["TopicArn"]
    url = sqs.create_queue(QueueName="from-sns")["QueueUrl"]
    qarn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=qarn)
    make_group(asg, ec2, desired=1, hooks=[terminate_hook(NotificationTargetARN=topic, RoleARN="arn:aws:iam::123456789012:role/r")])
    (victim,) = instances(asg)
    asg.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=True)
    msgs: list = []
    wait_until(lambda: msgs.extend(drain(sqs, url)) or len(msgs) >= 2, what="two SNS messages")
    assert all(m["Type"] == "Notification" and m["TopicArn"] == topic for m in msgs)
    import json

    inner = [json.loads(m["Message"]) for m in msgs]
    assert inner[0]["Event"] == "autoscaling:TEST_NOTIFICATION"
    assert inner[1]["EC2InstanceId"] == victim


def test_heartbeat_extends_and_timeout_applies_default_result(emu, asg, ec2):
    emu.ok("POST", "config", {"min_heartbeat_timeout_secs": 1})  # 2 s hooks keep the test short
    make_group(asg, ec2, desired=2, hooks=[terminate_hook(timeout=2, default="ABANDON")])
    a, b = sorted(instances(asg))
    asg.terminate_instance_in_auto_scaling_group(InstanceId=a, ShouldDecrementDesiredCapacity=True)
    asg.terminate_instance_in_auto_scaling_group(InstanceId=b, ShouldDecrementDesiredCapacity=True)
    states_are(asg, ["Terminating:Wait", "Terminating:Wait"])
    t0 = time.time()
    for _ in range(3):
        time.sleep(1.0)
        asg.record_lifecycle_action_heartbeat(AutoScalingGroupName="web", LifecycleHookName="drain", InstanceId=a)
    # b had no heartbeat: its 2 s timeout applied ABANDON, so it terminated.
    assert b not in instances(asg)
    assert ec2_state(ec2, b) == "terminated"
    # a is still waiting thanks to the heartbeats, past its original deadline.
    assert time.time() - t0 > 2.5
    assert instances(asg)[a] == "Terminating:Wait"
    (action,) = emu.ok("GET", "lifecycle-actions")["lifecycle_actions"]
    assert action["instance_id"] == a and action["heartbeat_timeout_secs"] == 2
    wait_until(lambda: a not in instances(asg), timeout=5, what="timeout after the last heartbeat")


def test_timeout_continue_terminates(emu, asg, ec2):
    emu.ok("POST", "config", {"min_heartbeat_timeout_secs": 1})  # a 1 s hook keeps the test short
    make_group(asg, ec2, desired=1, hooks=[terminate_hook(timeout=1, default="CONTINUE")])
    (victim,) = instances(asg)
    asg.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=True)
    wait_until(lambda: instances(asg).get(victim) == "Terminating:Wait", timeout=5)
    wait_until(lambda: ec2_state(ec2, victim) == "terminated", timeout=5)
    assert instances(asg) == {}


def test_set_desired_capacity_scale_in_uses_hooks_and_oldest_first(emu, asg, ec2):
    make_group(asg, ec2, desired=2, hooks=[terminate_hook()])
    old = set(instances(asg))
    asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=4)
    new = set(instances(asg)) - old
    asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=1)
    states = states_are(asg, ["InService"] + ["Terminating:Wait"] * 3)
    waiting = {i for i, s in states.items() if s == "Terminating:Wait"}
    assert len(waiting) == 3
    assert old <= waiting  # the two oldest go first
    assert sum(1 for s in states.values() if s == "InService") == 1
    assert set(i for i, s in states.items() if s == "InService") <= new
    listed = {a["instance_id"] for a in emu.ok("GET", "lifecycle-actions")["lifecycle_actions"]}
    assert listed == waiting


def test_update_group_max_below_desired_scales_in_through_hook(emu, asg, ec2):
    make_group(asg, ec2, desired=3, hooks=[terminate_hook()])
    asg.update_auto_scaling_group(AutoScalingGroupName="web", MaxSize=1)
    g = group_desc(asg)
    assert (g["DesiredCapacity"], g["MaxSize"]) == (1, 1)
    states_are(asg, ["InService", "Terminating:Wait", "Terminating:Wait"])


def test_scale_in_protection_is_respected(emu, asg, ec2):
    make_group(asg, ec2, desired=2, hooks=[terminate_hook()])
    a, b = sorted(instances(asg))
    asg.set_instance_protection(AutoScalingGroupName="web", InstanceIds=[a], ProtectedFromScaleIn=True)
    asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=1)
    states = instances(asg)
    assert states[a] == "InService" and states[b].startswith("Terminating")


def test_plain_terminating_before_terminating_wait(emu, asg, ec2, sqs, events):
    # 1 s plain Terminating (the scaling activity) + a 1 s deregistration delay.
    emu.ok("POST", "config", {"terminating_activity_secs": 1.0, "deregistration_delay_secs": 1.0})
    url = queue_with_rule(sqs, events)
    make_group(asg, ec2, desired=1, hooks=[terminate_hook()])
    (victim,) = instances(asg)
    t0 = time.time()
    asg.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=True)
    assert emu.metadata(victim, "/latest/meta-data/autoscaling/target-lifecycle-state") == (200, "Terminated")
    assert instances(asg)[victim] == "Terminating"
    described = asg.describe_auto_scaling_instances(InstanceIds=[victim])["AutoScalingInstances"][0]
    assert described["LifecycleState"] == "Terminating"
    for call in (asg.complete_lifecycle_action, asg.record_lifecycle_action_heartbeat):
        extra = {"LifecycleActionResult": "CONTINUE"} if call == asg.complete_lifecycle_action else {}
        with pytest.raises(ClientError) as err:
            call(AutoScalingGroupName="web", LifecycleHookName="drain", InstanceId=victim, **extra)
        assert err.value.response["Error"]["Code"] == "ValidationError"
        assert err.value.response["Error"]["Message"] == f"No active Lifecycle Action found with instance ID {victim}"
    assert drain(sqs, url) == [] and emu.ok("GET", "lifecycle-actions")["lifecycle_actions"] == []
    wait_until(lambda: instances(asg)[victim] == "Terminating:Wait", timeout=5)
    assert time.time() - t0 >= 1.9
    (event,) = wait_until(lambda: drain(sqs, url), timeout=2)
    assert event["detail"]["EC2InstanceId"] == victim
    (action,) = emu.ok("GET", "lifecycle-actions")["lifecycle_actions"]
    assert action["secs_left"] > 299  # the timeout counts from Terminating:Wait
    asg.complete_lifecycle_action(
        AutoScalingGroupName="web", LifecycleHookName="drain", InstanceId=victim, LifecycleActionResult="CONTINUE"
    )
    wait_until(lambda: victim not in instances(asg))


def test_two_hooks_both_must_complete(emu, asg, ec2):
    make_group(asg, ec2, desired=1, hooks=[terminate_hook("one"), terminate_hook("two")])
    (victim,) = instances(asg)
    asg.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=True)
    wait_until(lambda: instances(asg)[victim] == "Terminating:Wait", timeout=5)
    asg.complete_lifecycle_action(AutoScalingGroupName="web", LifecycleHookName="one", InstanceId=victim, LifecycleActionResult="CONTINUE")
    assert instances(asg)[victim] == "Terminating:Wait"
    asg.complete_lifecycle_action(AutoScalingGroupName="web", LifecycleHookName="two", InstanceId=victim, LifecycleActionResult="CONTINUE")
    wait_until(lambda: victim not in instances(asg))


def test_delete_hook_completes_outstanding_actions(emu, asg, ec2):
    make_group(asg, ec2, desired=1, hooks=[terminate_hook()])
    (victim,) = instances(asg)
    asg.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=True)
    wait_until(lambda: instances(asg)[victim] == "Terminating:Wait", timeout=5)
    asg.delete_lifecycle_hook(AutoScalingGroupName="web", LifecycleHookName="drain")
    wait_until(lambda: victim not in instances(asg))
    assert asg.describe_lifecycle_hooks(AutoScalingGroupName="web")["LifecycleHooks"] == []
