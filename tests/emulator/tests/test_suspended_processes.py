"""SuspendProcesses / ResumeProcesses as the User Guide describes them ("Suspend and resume
Amazon EC2 Auto Scaling processes", "How suspended processes affect other processes"):
process names, AddToLoadBalancer, HealthCheck, ReplaceUnhealthy, Launch and Terminate, and
the calls that still work (or not) while they are suspended."""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError

from helpers import (
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

ALL = [
    "AZRebalance",
    "AddToLoadBalancer",
    "AlarmNotification",
    "HealthCheck",
    "InstanceRefresh",
    "Launch",
    "ReplaceUnhealthy",
    "ScheduledActions",
    "Terminate",
]
# What lifeguard's swap holds while it runs (controller/src/swap/record.rs, HELD).
HELD = ["Launch", "Terminate", "AZRebalance", "ReplaceUnhealthy", "AlarmNotification", "ScheduledActions"]


def _suspended(asg):
    return sorted(p["ProcessName"] for p in group_desc(asg)["SuspendedProcesses"])


def _health(asg, instance_id):
    found = asg.describe_auto_scaling_instances(InstanceIds=[instance_id])["AutoScalingInstances"]
    return (found[0]["LifecycleState"], found[0]["HealthStatus"]) if found else None


def _error(call, **kwargs):
    with pytest.raises(ClientError) as err:
        call(**kwargs)
    return err.value.response["Error"]


def _instance(ec2, **kwargs):
    return ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, **kwargs)["Instances"][0]["InstanceId"]


def _vpc(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    return vpc, subnet


def _targets(elbv2, arn):
    found = elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    return {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in found}


# ------------------------------------------------------------------ names
def test_process_names_are_checked_and_none_means_all(emu, asg, ec2):
    make_group(asg, ec2, desired=0)
    for call in (asg.suspend_processes, asg.resume_processes):
        error = _error(call, AutoScalingGroupName="web", ScalingProcesses=["Launch", "Lanch"])
        assert error["Code"] == "ValidationError"
        assert "Lanch" in error["Message"]
        assert _error(call, AutoScalingGroupName="nope", ScalingProcesses=["Launch"])["Code"] == "ValidationError"
    assert _suspended(asg) == []  # the refused call suspended nothing, not even Launch
    asg.suspend_processes(AutoScalingGroupName="web", ScalingProcesses=["HealthCheck"])
    asg.suspend_processes(AutoScalingGroupName="web", ScalingProcesses=["Terminate"])
    assert _suspended(asg) == ["HealthCheck", "Terminate"]
    asg.suspend_processes(AutoScalingGroupName="web")
    assert _suspended(asg) == ALL
    asg.resume_processes(AutoScalingGroupName="web", ScalingProcesses=["Launch", "Terminate"])
    assert _suspended(asg) == sorted(set(ALL) - {"Launch", "Terminate"})
    asg.resume_processes(AutoScalingGroupName="web")
    assert _suspended(asg) == []


# ------------------------------------------------------- AddToLoadBalancer
def test_add_to_load_balancer_suspended_leaves_new_instances_out(emu, asg, ec2):
    elbv2 = emu.client("elbv2")
    vpc, subnet = _vpc(ec2)
    arn = elbv2.create_target_group(Name="tg", Protocol="HTTP", Port=80, VpcId=vpc)["TargetGroups"][0]["TargetGroupArn"]
    make_group(asg, ec2, desired=1, TargetGroupARNs=[arn], VPCZoneIdentifier=subnet)
    (first,) = instances(asg)
    assert set(_targets(elbv2, arn)) == {first}
    asg.suspend_processes(AutoScalingGroupName="web", ScalingProcesses=["AddToLoadBalancer"])
    asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=2)
    (second,) = set(instances(asg)) - {first}
    assert instances(asg)[second] == "InService"
    assert set(_targets(elbv2, arn)) == {first}
    # Resuming does not add the instances launched meanwhile ("You must register those
    # instances manually"); instances launched from then on are added.
    asg.resume_processes(AutoScalingGroupName="web", ScalingProcesses=["AddToLoadBalancer"])
    assert set(_targets(elbv2, arn)) == {first}
    asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=3)
    (third,) = set(instances(asg)) - {first, second}
    assert set(_targets(elbv2, arn)) == {first, third}
    # Registered by hand, it stays registered, and leaves the target group with the group.
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": second}])
    asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=3)
    assert set(_targets(elbv2, arn)) == {first, second, third}
    asg.terminate_instance_in_auto_scaling_group(InstanceId=second, ShouldDecrementDesiredCapacity=True)
    assert set(_targets(elbv2, arn)) == {first, third}


def test_standby_and_back_is_added_again_once_resumed(emu, asg, ec2):
    elbv2 = emu.client("elbv2")
    vpc, subnet = _vpc(ec2)
    arn = elbv2.create_target_group(Name="tg", Protocol="HTTP", Port=80, VpcId=vpc)["TargetGroups"][0]["TargetGroupArn"]
    make_group(asg, ec2, desired=1, TargetGroupARNs=[arn], VPCZoneIdentifier=subnet)
    asg.suspend_processes(AutoScalingGroupName="web", ScalingProcesses=["AddToLoadBalancer"])
    asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=2)
    (first,) = set(_targets(elbv2, arn))
    (second,) = set(instances(asg)) - {first}
    asg.resume_processes(AutoScalingGroupName="web", ScalingProcesses=["AddToLoadBalancer"])
    # Out of InService and back: registered like any instance going InService.
    asg.enter_standby(AutoScalingGroupName="web", InstanceIds=[second], ShouldDecrementDesiredCapacity=True)
    asg.exit_standby(AutoScalingGroupName="web", InstanceIds=[second])
    assert set(_targets(elbv2, arn)) == {first, second}


# ------------------------------------------------- health check, replacement
def test_replace_unhealthy_suspended_marks_but_keeps_then_replaces_on_resume(emu, asg, ec2, sqs, events):
    url = queue_with_rule(sqs, events)
    make_group(asg, ec2, desired=1, hooks=[terminate_hook()])
    (victim,) = instances(asg)
    asg.suspend_processes(AutoScalingGroupName="web", ScalingProcesses=["ReplaceUnhealthy"])
    ec2.terminate_instances(InstanceIds=[victim])
    wait_until(lambda: _health(asg, victim) == ("InService", "Unhealthy"), timeout=5)
    time.sleep(1.0)  # twice the suite's health check delay: nothing more happens
    assert instances(asg) == {victim: "InService"}
    assert drain(sqs, url) == []
    asg.resume_processes(AutoScalingGroupName="web", ScalingProcesses=["ReplaceUnhealthy"])
    states = instances(asg)
    assert states.pop(victim).startswith("Terminating")
    assert list(states.values()) == ["InService"]  # replaced at once
    (event,) = wait_until(lambda: drain(sqs, url), timeout=5)
    assert event["detail"]["EC2InstanceId"] == victim


def test_terminate_suspended_holds_replacement_until_resumed(emu, asg, ec2):
    make_group(asg, ec2, desired=1)
    (victim,) = instances(asg)
    asg.suspend_processes(AutoScalingGroupName="web", ScalingProcesses=["Terminate"])
    ec2.terminate_instances(InstanceIds=[victim])
    # "ReplaceUnhealthy is inactive but not HealthCheck."
    wait_until(lambda: _health(asg, victim) == ("InService", "Unhealthy"), timeout=5)
    time.sleep(0.6)
    assert instances(asg) == {victim: "InService"}
    asg.resume_processes(AutoScalingGroupName="web", ScalingProcesses=["Terminate"])
    wait_until(lambda: victim not in instances(asg), timeout=5)
    assert list(instances(asg).values()) == ["InService"]


def test_health_check_suspended_marks_nothing_until_resumed(emu, asg, ec2):
    make_group(asg, ec2, desired=1)
    (victim,) = instances(asg)
    asg.suspend_processes(AutoScalingGroupName="web", ScalingProcesses=["HealthCheck"])
    ec2.terminate_instances(InstanceIds=[victim])
    time.sleep(1.2)  # more than twice the suite's health check delay
    assert _health(asg, victim) == ("InService", "Healthy")
    asg.resume_processes(AutoScalingGroupName="web", ScalingProcesses=["HealthCheck"])
    # Checked again from the resume on: noticed after the delay, then replaced.
    assert emu.ok("GET", f"instances/{victim}")["timed_phase"]["ends"] == "unhealthy"
    wait_until(lambda: victim not in instances(asg), timeout=5)
    assert list(instances(asg).values()) == ["InService"]


def test_launch_suspended_unhealthy_terminated_without_replacement(emu, asg, ec2):
    make_group(asg, ec2, desired=2)
    victim, other = sorted(instances(asg))
    asg.suspend_processes(AutoScalingGroupName="web", ScalingProcesses=["Launch"])
    ec2.terminate_instances(InstanceIds=[victim])
    wait_until(lambda: victim not in instances(asg), timeout=5)
    assert instances(asg) == {other: "InService"}
    assert group_desc(asg)["DesiredCapacity"] == 2
    asg.resume_processes(AutoScalingGroupName="web", ScalingProcesses=["Launch"])
    states_are(asg, ["InService", "InService"])


# ---------------------------------------------- explicit calls while held
def test_explicit_terminate_runs_its_hook_with_launch_and_terminate_suspended(emu, asg, ec2, sqs, events):
    url = queue_with_rule(sqs, events)
    make_group(asg, ec2, desired=2, hooks=[terminate_hook()])
    victim, other = sorted(instances(asg))
    asg.suspend_processes(AutoScalingGroupName="web", ScalingProcesses=["Launch", "Terminate"])
    asg.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=False)
    wait_until(lambda: instances(asg)[victim] == "Terminating:Wait", timeout=5)
    (event,) = wait_until(lambda: drain(sqs, url), timeout=5)
    assert event["detail"]["EC2InstanceId"] == victim
    asg.complete_lifecycle_action(AutoScalingGroupName="web", LifecycleHookName="drain", InstanceId=victim,
                                  LifecycleActionResult="CONTINUE")
    wait_until(lambda: victim not in instances(asg), timeout=5)
    assert ec2_state(ec2, victim) == "terminated"
    # Desired capacity stays 2, but Launch is held: no replacement until it is resumed.
    assert instances(asg) == {other: "InService"} and group_desc(asg)["DesiredCapacity"] == 2
    asg.resume_processes(AutoScalingGroupName="web")
    states_are(asg, ["InService", "InService"])


def test_detach_works_with_launch_and_terminate_suspended(emu, asg, ec2):
    make_group(asg, ec2, desired=2)
    victim, other = sorted(instances(asg))
    asg.suspend_processes(AutoScalingGroupName="web", ScalingProcesses=["Launch", "Terminate"])
    asg.detach_instances(AutoScalingGroupName="web", InstanceIds=[victim], ShouldDecrementDesiredCapacity=False)
    assert instances(asg) == {other: "InService"}
    assert ec2_state(ec2, victim) == "running"
    asg.resume_processes(AutoScalingGroupName="web", ScalingProcesses=["Launch"])
    states_are(asg, ["InService", "InService"])


def test_attach_and_exit_standby_refused_while_launch_suspended(emu, asg, ec2):
    # User Guide: "you can't attach new instances to the group. To attach instances, you
    # must first resume Launch"; "While Launch is suspended, you cannot return an instance
    # in the Standby state to service".
    make_group(asg, ec2, desired=2, max_size=4)
    first, second = sorted(instances(asg))
    extra = _instance(ec2)
    asg.enter_standby(AutoScalingGroupName="web", InstanceIds=[second], ShouldDecrementDesiredCapacity=True)
    asg.suspend_processes(AutoScalingGroupName="web", ScalingProcesses=["Launch"])
    error = _error(asg.attach_instances, AutoScalingGroupName="web", InstanceIds=[extra])
    assert error["Code"] == "ValidationError"
    assert error["Message"] == "Cannot attach instances to AutoScalingGroup web while the Launch process is suspended"
    error = _error(asg.exit_standby, AutoScalingGroupName="web", InstanceIds=[second])
    assert error["Code"] == "ValidationError"
    assert error["Message"] == (
        "Cannot move instances out of Standby for AutoScalingGroup web while the Launch process is suspended"
    )
    assert instances(asg) == {first: "InService", second: "Standby"}
    assert group_desc(asg)["DesiredCapacity"] == 1
    # The other processes do not stand in the way.
    asg.suspend_processes(AutoScalingGroupName="web", ScalingProcesses=sorted(set(ALL) - {"Launch"}))
    asg.resume_processes(AutoScalingGroupName="web", ScalingProcesses=["Launch"])
    asg.attach_instances(AutoScalingGroupName="web", InstanceIds=[extra])
    asg.exit_standby(AutoScalingGroupName="web", InstanceIds=[second])
    assert instances(asg) == {first: "InService", second: "InService", extra: "InService"}
    assert group_desc(asg)["DesiredCapacity"] == 3


def test_swap_sequence_attach_then_hold_launch(emu, asg, ec2, sqs, events):
    """Attach while every held process but Launch is suspended, hold Launch once attached,
    wait for the new instance to be InService and healthy in the target group, retire the
    old one through its hook; nothing launches or terminates behind the swap's back, even
    with the old instance failing its health check meanwhile."""
    url = queue_with_rule(sqs, events)
    elbv2 = emu.client("elbv2")
    vpc, subnet = _vpc(ec2)
    arn = elbv2.create_target_group(
        Name="tg", Protocol="HTTP", Port=80, VpcId=vpc,
        HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2, HealthyThresholdCount=2,
    )["TargetGroups"][0]["TargetGroupArn"]
    # No connection draining (AWS's default: 300 s in plain Terminating before the hook).
    elbv2.modify_target_group_attributes(
        TargetGroupArn=arn, Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "0"}]
    )
    emu.ok("POST", "config", {"target_healthy_secs": 0.5})  # the target group's 10 s, shortened
    make_group(
        asg, ec2, desired=1, max_size=2, hooks=[terminate_hook()], TargetGroupARNs=[arn], VPCZoneIdentifier=subnet
    )
    (old,) = instances(asg)
    new = _instance(ec2, SubnetId=subnet)
    asg.suspend_processes(AutoScalingGroupName="web", ScalingProcesses=[p for p in HELD if p != "Launch"])
    asg.attach_instances(AutoScalingGroupName="web", InstanceIds=[new])
    asg.suspend_processes(AutoScalingGroupName="web", ScalingProcesses=["Launch"])
    assert _suspended(asg) == sorted(HELD)
    assert _targets(elbv2, arn)[new] == "initial"
    wait_until(lambda: _targets(elbv2, arn) == {old: "healthy", new: "healthy"}, timeout=5)
    ec2.terminate_instances(InstanceIds=[old])  # fails the EC2 health check: marked, not replaced
    wait_until(lambda: _health(asg, old) == ("InService", "Unhealthy"), timeout=5)
    asg.terminate_instance_in_auto_scaling_group(InstanceId=old, ShouldDecrementDesiredCapacity=True)
    (event,) = wait_until(lambda: drain(sqs, url), timeout=5)
    assert event["detail"]["EC2InstanceId"] == old
    asg.complete_lifecycle_action(AutoScalingGroupName="web", LifecycleHookName="drain", InstanceId=old,
                                  LifecycleActionResult="CONTINUE")
    wait_until(lambda: old not in instances(asg), timeout=5)
    asg.resume_processes(AutoScalingGroupName="web", ScalingProcesses=HELD)
    time.sleep(0.5)
    assert instances(asg) == {new: "InService"}
    assert group_desc(asg)["DesiredCapacity"] == 1
    assert _targets(elbv2, arn) == {new: "healthy"}
