"""Instances killed in EC2 directly (TerminateInstances, enforced spot interruption): the
group's EC2 health check notices, then the terminate hooks run as usual."""

from __future__ import annotations

import time

from helpers import (
    drain,
    ec2_state,
    instances,
    make_group,
    queue_with_rule,
    terminate_hook,
    wait_until,
)


def _described(asg, instance_id):
    found = asg.describe_auto_scaling_instances(InstanceIds=[instance_id])["AutoScalingInstances"]
    return (found[0]["LifecycleState"], found[0]["HealthStatus"]) if found else None


def test_ec2_terminate_of_member_runs_terminate_hook(emu, asg, ec2, sqs, events):
    emu.ok("POST", "config", {"health_check_delay_secs": 1.0})  # room for the checks before it
    url = queue_with_rule(sqs, events)
    make_group(asg, ec2, desired=1, hooks=[terminate_hook()])
    (victim,) = instances(asg)
    t0 = time.time()
    ec2.terminate_instances(InstanceIds=[victim])
    assert ec2_state(ec2, victim) == "terminated"
    # Until the health check notices (1 s here, 10 s by default) nothing changes.
    assert _described(asg, victim) == ("InService", "Healthy")
    assert emu.ok("GET", f"instances/{victim}")["timed_phase"]["ends"] == "unhealthy"
    wait_until(lambda: instances(asg).get(victim) == "Terminating", timeout=5)
    assert time.time() - t0 >= 0.9
    assert _described(asg, victim) == ("Terminating", "Unhealthy")
    replacement = wait_until(lambda: [i for i, s in instances(asg).items() if s == "InService"], timeout=5)
    assert victim not in replacement
    (event,) = wait_until(lambda: drain(sqs, url), timeout=5)
    assert event["detail"]["EC2InstanceId"] == victim
    assert instances(asg)[victim] == "Terminating:Wait"
    # The instance is gone but the action still has to be completed (or time out).
    assert emu.metadata(victim, "/latest/meta-data/autoscaling/target-lifecycle-state") == (200, "Terminated")
    asg.complete_lifecycle_action(AutoScalingGroupName="web", LifecycleHookName="drain",
                                  LifecycleActionToken=event["detail"]["LifecycleActionToken"],
                                  LifecycleActionResult="CONTINUE")
    wait_until(lambda: victim not in instances(asg), timeout=5)


def test_enforced_spot_interruption_runs_terminate_hook(emu, asg, ec2, sqs, events):
    emu.ok("POST", "config", {"min_heartbeat_timeout_secs": 1})  # a 1 s hook keeps the test short
    url = queue_with_rule(sqs, events)
    make_group(asg, ec2, desired=1, hooks=[terminate_hook(timeout=1, default="CONTINUE")])
    (victim,) = instances(asg)
    emu.ok("POST", f"instances/{victim}/spot-interruption", {"action": "terminate", "in_secs": 0.2, "enforce": True})
    wait_until(lambda: ec2_state(ec2, victim) == "terminated", timeout=5)
    (event,) = wait_until(lambda: drain(sqs, url), timeout=5)
    assert event["detail-type"] == "EC2 Instance-terminate Lifecycle Action"
    assert event["detail"]["EC2InstanceId"] == victim
    # Nobody completes it: the 1 s heartbeat timeout applies CONTINUE.
    wait_until(lambda: victim not in instances(asg), timeout=5)
    assert list(instances(asg).values()) == ["InService"]
