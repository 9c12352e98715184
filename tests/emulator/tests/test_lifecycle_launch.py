"""Launch lifecycle hooks (plain Pending first), and the calls that bypass hooks (attach,
detach, standby, force delete)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from helpers import (
    drain,
    ec2_state,
    group_desc,
    instances,
    launch_hook,
    make_group,
    queue_with_rule,
    states_are,
    terminate_hook,
    wait_until,
)

LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"


def test_scale_out_waits_in_pending_wait_then_continue(emu, asg, ec2, sqs, events):
    emu.ok("POST", "config", {"launch_pending_secs": 1.0})  # room for the checks below
    url = queue_with_rule(sqs, events)
    make_group(asg, ec2, desired=0, hooks=[launch_hook()])
    asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=2)
    # Plain Pending first (EC2 starts the instance): no action, no event yet.
    states = instances(asg)
    assert sorted(states.values()) == ["Pending", "Pending"]
    a, b = sorted(states)
    with pytest.raises(ClientError) as err:
        asg.complete_lifecycle_action(
            AutoScalingGroupName="web", LifecycleHookName="ready", InstanceId=a, LifecycleActionResult="CONTINUE"
        )
    assert err.value.response["Error"]["Message"] == f"No active Lifecycle Action found with instance ID {a}"
    assert drain(sqs, url) == []
    described = asg.describe_auto_scaling_instances(InstanceIds=[a])["AutoScalingInstances"][0]
    assert described["LifecycleState"] == "Pending"
    states = states_are(asg, ["Pending:Wait", "Pending:Wait"])
    evs = wait_until(lambda: (lambda m: m if len(m) == 2 else None)(drain(sqs, url)))
    assert {e["detail-type"] for e in evs} == {"EC2 Instance-launch Lifecycle Action"}
    assert {e["detail"]["EC2InstanceId"] for e in evs} == set(states)
    d = evs[0]["detail"]
    assert (d["Origin"], d["Destination"]) == ("EC2", "AutoScalingGroup")
    assert d["LifecycleTransition"] == LAUNCHING
    assert "NotificationMetadata" not in d
    # Capacity counts Pending:Wait instances: nothing more is launched.
    asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=2)
    assert len(instances(asg)) == 2
    assert emu.metadata(a, "/latest/meta-data/autoscaling/target-lifecycle-state") == (200, "InService")
    asg.complete_lifecycle_action(
        AutoScalingGroupName="web", LifecycleHookName="ready", InstanceId=a, LifecycleActionResult="CONTINUE"
    )
    assert instances(asg) == {a: "InService", b: "Pending:Wait"}


def test_launch_abandon_terminates_and_replaces(emu, asg, ec2):
    make_group(asg, ec2, desired=0, hooks=[launch_hook()])
    asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=1)
    (first,) = states_are(asg, ["Pending:Wait"])
    asg.complete_lifecycle_action(
        AutoScalingGroupName="web", LifecycleHookName="ready", InstanceId=first, LifecycleActionResult="ABANDON"
    )
    states = instances(asg)
    assert first not in states
    assert ec2_state(ec2, first) == "terminated"
    (replacement,) = states
    assert states[replacement] in ("Pending", "Pending:Wait")
    states_are(asg, ["Pending:Wait"])
    assert group_desc(asg)["DesiredCapacity"] == 1


def test_launch_timeout_default_abandon_replaces(emu, asg, ec2):
    emu.ok("POST", "config", {"min_heartbeat_timeout_secs": 1})  # a 1 s hook keeps the test short
    make_group(asg, ec2, desired=0, hooks=[launch_hook(timeout=1, default="ABANDON")])
    asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=1)
    (first,) = instances(asg)
    wait_until(lambda: first not in instances(asg), timeout=5)
    assert ec2_state(ec2, first) == "terminated"
    assert len(instances(asg)) == 1


def test_launch_timeout_default_continue_goes_in_service(emu, asg, ec2):
    emu.ok("POST", "config", {"min_heartbeat_timeout_secs": 1})  # a 1 s hook keeps the test short
    make_group(asg, ec2, desired=0, hooks=[launch_hook(timeout=1, default="CONTINUE")])
    asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=1)
    (first,) = instances(asg)
    wait_until(lambda: instances(asg) == {first: "InService"}, timeout=5)


def test_create_group_with_hook_specifications(emu, asg, ec2):
    make_group(asg, ec2, desired=2, hooks=[launch_hook(), terminate_hook()])
    states_are(asg, ["Pending:Wait", "Pending:Wait"])
    hooks = asg.describe_lifecycle_hooks(AutoScalingGroupName="web")["LifecycleHooks"]
    assert {h["LifecycleHookName"] for h in hooks} == {"ready", "drain"}


def test_group_without_hooks(emu, asg, ec2):
    emu.ok("POST", "config", {"terminating_activity_secs": 1.0})  # room for the checks below
    make_group(asg, ec2, desired=2)
    # No launch hook: InService at once (as moto does).
    assert sorted(instances(asg).values()) == ["InService", "InService"]
    victim = sorted(instances(asg))[0]
    asg.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=True)
    # No terminate hook: still the scaling activity's plain Terminating phase first.
    assert instances(asg)[victim] == "Terminating"
    assert emu.metadata(victim, "/latest/meta-data/autoscaling/target-lifecycle-state") == (200, "Terminated")
    wait_until(lambda: victim not in instances(asg), timeout=5)
    assert ec2_state(ec2, victim) == "terminated"


def test_detach_bypasses_hooks(emu, asg, ec2):
    make_group(asg, ec2, desired=2, hooks=[terminate_hook()])
    a, b = sorted(instances(asg))
    asg.detach_instances(AutoScalingGroupName="web", InstanceIds=[a], ShouldDecrementDesiredCapacity=True)
    assert instances(asg) == {b: "InService"}
    assert ec2_state(ec2, a) == "running"
    assert emu.ok("GET", "lifecycle-actions")["lifecycle_actions"] == []
    assert emu.metadata(a, "/latest/meta-data/autoscaling/target-lifecycle-state") == (200, "Detached")


def test_detach_without_decrement_replaces_through_launch_hook(emu, asg, ec2):
    make_group(asg, ec2, desired=1, hooks=[launch_hook(default="CONTINUE")])
    (first,) = states_are(asg, ["Pending:Wait"])
    asg.complete_lifecycle_action(AutoScalingGroupName="web", LifecycleHookName="ready", InstanceId=first, LifecycleActionResult="CONTINUE")
    asg.detach_instances(AutoScalingGroupName="web", InstanceIds=[first], ShouldDecrementDesiredCapacity=False)
    states = instances(asg)
    assert first not in states and list(states.values())[0] in ("Pending", "Pending:Wait")
    states_are(asg, ["Pending:Wait"])


def test_standby_bypasses_hooks(emu, asg, ec2):
    make_group(asg, ec2, desired=2, hooks=[terminate_hook()])
    a, b = sorted(instances(asg))
    asg.enter_standby(AutoScalingGroupName="web", InstanceIds=[a], ShouldDecrementDesiredCapacity=True)
    assert instances(asg) == {a: "Standby", b: "InService"}
    assert emu.ok("GET", "lifecycle-actions")["lifecycle_actions"] == []
    assert emu.metadata(a, "/latest/meta-data/autoscaling/target-lifecycle-state") == (200, "Standby")
    asg.exit_standby(AutoScalingGroupName="web", InstanceIds=[a])
    assert instances(asg) == {a: "InService", b: "InService"}


def test_exit_standby_skips_launch_hook(emu, asg, ec2):
    # "Lifecycle hook availability": hooks do not run when instances move out of standby.
    make_group(asg, ec2, desired=1)
    (a,) = instances(asg)
    asg.put_lifecycle_hook(AutoScalingGroupName="web", LifecycleHookName="ready", LifecycleTransition=LAUNCHING)
    asg.enter_standby(AutoScalingGroupName="web", InstanceIds=[a], ShouldDecrementDesiredCapacity=True)
    asg.exit_standby(AutoScalingGroupName="web", InstanceIds=[a])
    assert instances(asg) == {a: "InService"}
    assert emu.ok("GET", "lifecycle-actions")["lifecycle_actions"] == []


def test_force_delete_bypasses_hooks(emu, asg, ec2):
    make_group(asg, ec2, desired=2, hooks=[terminate_hook()])
    ids = list(instances(asg))
    with pytest.raises(ClientError) as err:
        asg.delete_auto_scaling_group(AutoScalingGroupName="web")
    assert err.value.response["Error"]["Code"] == "ResourceInUse"
    asg.delete_auto_scaling_group(AutoScalingGroupName="web", ForceDelete=True)
    assert asg.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])["AutoScalingGroups"] == []
    assert all(ec2_state(ec2, i) == "terminated" for i in ids)
    assert emu.ok("GET", "lifecycle-actions")["lifecycle_actions"] == []
    assert asg.describe_lifecycle_hooks(AutoScalingGroupName="web")["LifecycleHooks"] == []


def test_suspended_terminate_process_holds_scale_in(emu, asg, ec2):
    make_group(asg, ec2, desired=2, hooks=[terminate_hook()])
    asg.suspend_processes(AutoScalingGroupName="web", ScalingProcesses=["Terminate"])
    asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=1)
    assert sorted(instances(asg).values()) == ["InService", "InService"]
    asg.resume_processes(AutoScalingGroupName="web", ScalingProcesses=["Terminate"])
    states_are(asg, ["InService", "Terminating:Wait"])


def test_instance_launch_template_version_is_the_launched_one(emu, asg, ec2):
    lt = make_group(asg, ec2, desired=1, version="$Latest")
    (old,) = instances(asg)
    ec2.create_launch_template_version(LaunchTemplateId=lt, SourceVersion="1", LaunchTemplateData={"ImageId": "ami-00000002"})
    asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=2)
    versions = {i["InstanceId"]: i["LaunchTemplate"]["Version"] for i in group_desc(asg)["Instances"]}
    assert versions[old] == "1"
    (new,) = set(versions) - {old}
    assert versions[new] == "2"
    image = ec2.describe_instances(InstanceIds=[new])["Reservations"][0]["Instances"][0]["ImageId"]
    assert image == "ami-00000002"


def test_attach_adds_capacity_without_launch_hook(emu, asg, ec2):
    # "Lifecycle hook availability": hooks do not run for attached instances.
    make_group(asg, ec2, desired=1, max_size=3)
    extra = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    asg.put_lifecycle_hook(AutoScalingGroupName="web", LifecycleHookName="ready", LifecycleTransition=LAUNCHING)
    asg.attach_instances(AutoScalingGroupName="web", InstanceIds=[extra])
    assert group_desc(asg)["DesiredCapacity"] == 2
    assert instances(asg)[extra] == "InService"
    assert emu.ok("GET", "lifecycle-actions")["lifecycle_actions"] == []
    assert emu.metadata(extra, "/latest/meta-data/autoscaling/target-lifecycle-state") == (200, "InService")
    with pytest.raises(ClientError):
        asg.attach_instances(AutoScalingGroupName="web", InstanceIds=[extra])
