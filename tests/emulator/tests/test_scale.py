"""A large group scaled to zero at once through a terminate hook (no O(n^2) surprises).

LIFEGUARD_EMULATOR_SCALE_N sets the group size (default 200; the benchmark uses 500).
"""

from __future__ import annotations

import os
import time

from helpers import drain, instances, make_group, queue_with_rule, terminate_hook, wait_until

N = int(os.environ.get("LIFEGUARD_EMULATOR_SCALE_N", "200"))


def test_scale_group_to_zero_through_hooks(emu, asg, ec2, sqs, events):
    url = queue_with_rule(sqs, events)
    make_group(asg, ec2, desired=N, max_size=N, hooks=[terminate_hook(timeout=600)])
    assert len(instances(asg)) == N

    t0 = time.time()
    asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=0)
    scale_in_secs = time.time() - t0
    assert all(s.startswith("Terminating") for s in instances(asg).values())
    assert scale_in_secs < 10, scale_in_secs
    wait_until(lambda: list(instances(asg).values()) == ["Terminating:Wait"] * N, timeout=10)

    t0 = time.time()
    got = []
    while len(got) < N and time.time() - t0 < 30:
        got.extend(drain(sqs, url))
    assert len(got) == N
    assert len({e["detail"]["EC2InstanceId"] for e in got}) == N

    t0 = time.time()
    for event in got:
        asg.complete_lifecycle_action(
            AutoScalingGroupName="web",
            LifecycleHookName="drain",
            LifecycleActionToken=event["detail"]["LifecycleActionToken"],
            LifecycleActionResult="CONTINUE",
        )
    per_call = (time.time() - t0) / N
    assert per_call < 0.05, per_call
    wait_until(lambda: instances(asg) == {}, timeout=20, what="all instances gone")
    states = {
        i["State"]["Name"]
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
    }
    assert states == {"terminated"}
