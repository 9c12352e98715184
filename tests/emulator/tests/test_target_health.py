"""ELBv2 target health in time: a new target is `initial` for HealthCheckIntervalSeconds x
HealthyThresholdCount of its target group, then `healthy`; the control API can make an
instance fail its health checks in every target group."""

from __future__ import annotations

import time

from helpers import instances, make_group, wait_until

INITIAL = {
    "State": "initial",
    "Reason": "Elb.RegistrationInProgress",
    "Description": "Target registration is in progress",
}
UNHEALTHY = {
    "State": "unhealthy",
    "Reason": "Target.ResponseCodeMismatch",
    "Description": "Health checks failed with these codes: [503]",
}
NOT_REGISTERED = {
    "State": "unused",
    "Reason": "Target.NotRegistered",
    "Description": "Target is not registered to the target group",
}


def _vpc(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    return vpc, subnet


def _target_group(elbv2, vpc, name, interval=5, threshold=2):
    """AWS's smallest settings by default (interval 5 s, threshold 2: healthy after 10 s)."""
    kwargs = {}
    if interval is not None:
        kwargs.update(HealthCheckIntervalSeconds=interval, HealthCheckTimeoutSeconds=2, HealthyThresholdCount=threshold)
    return elbv2.create_target_group(Name=name, Protocol="HTTP", Port=80, VpcId=vpc, **kwargs)["TargetGroups"][0][
        "TargetGroupArn"
    ]


def _instance(ec2, subnet):
    reservation = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=subnet)
    return reservation["Instances"][0]["InstanceId"]


def _health(elbv2, arn, instance_id=None):
    """instance id -> TargetHealth (all registered targets, or the one asked for)."""
    kwargs = {"Targets": [{"Id": instance_id}]} if instance_id else {}
    found = elbv2.describe_target_health(TargetGroupArn=arn, **kwargs)["TargetHealthDescriptions"]
    return {d["Target"]["Id"]: d["TargetHealth"] for d in found}


def test_new_target_is_initial_for_interval_times_threshold(emu, ec2):
    elbv2 = emu.client("elbv2")
    vpc, subnet = _vpc(ec2)
    arn = _target_group(elbv2, vpc, "tg-min")
    iid = _instance(ec2, subnet)
    t0 = time.time()
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    assert _health(elbv2, arn) == {iid: INITIAL}
    assert _health(elbv2, arn, iid) == {iid: INITIAL}
    # Healthy once two checks 5 s apart have passed, not before.
    wait_until(lambda: _health(elbv2, arn)[iid]["State"] == "healthy", timeout=15, interval=0.1)
    assert time.time() - t0 >= 10.0 - 0.05
    assert _health(elbv2, arn) == {iid: {"State": "healthy"}}


def test_group_instances_registered_by_auto_scaling_start_initial(emu, asg, ec2):
    elbv2 = emu.client("elbv2")
    vpc, subnet = _vpc(ec2)
    arn = _target_group(elbv2, vpc, "tg-web")
    make_group(asg, ec2, desired=2, TargetGroupARNs=[arn], VPCZoneIdentifier=subnet)
    a, b = sorted(instances(asg))
    assert _health(elbv2, arn) == {a: INITIAL, b: INITIAL}
    # Registered when it goes InService: an instance attached later starts its own wait.
    emu.ok("POST", "config", {"target_healthy_secs": 0.5})  # shortens the 10 s above
    wait_until(lambda: _health(elbv2, arn) == {a: {"State": "healthy"}, b: {"State": "healthy"}}, timeout=5)
    extra = _instance(ec2, subnet)
    asg.attach_instances(AutoScalingGroupName="web", InstanceIds=[extra])
    assert _health(elbv2, arn)[extra] == INITIAL
    wait_until(lambda: _health(elbv2, arn)[extra] == {"State": "healthy"}, timeout=5)


def test_config_override_and_registering_again(emu, ec2):
    elbv2 = emu.client("elbv2")
    vpc, subnet = _vpc(ec2)
    arn = _target_group(elbv2, vpc, "tg-a")
    iid = _instance(ec2, subnet)
    emu.ok("POST", "config", {"target_healthy_secs": 0.3})
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    assert _health(elbv2, arn)[iid] == INITIAL
    wait_until(lambda: _health(elbv2, arn)[iid] == {"State": "healthy"}, timeout=5)
    # Registering a registered target changes nothing; after a deregistration it starts over.
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    assert _health(elbv2, arn)[iid] == {"State": "healthy"}
    elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    assert _health(elbv2, arn)[iid] == INITIAL
    # 0 = healthy at once (moto's own behaviour).
    emu.ok("POST", "config", {"target_healthy_secs": 0})
    assert _health(elbv2, arn)[iid] == {"State": "healthy"}


def test_defaults_are_the_target_groups_own(emu, ec2):
    emu.ok("POST", "reset")
    assert emu.ok("GET", "config")["target_healthy_secs"] is None
    elbv2 = emu.client("elbv2")
    vpc, subnet = _vpc(ec2)
    arn = _target_group(elbv2, vpc, "tg-default", interval=None)
    tg = elbv2.describe_target_groups(TargetGroupArns=[arn])["TargetGroups"][0]
    assert (tg["HealthCheckIntervalSeconds"], tg["HealthyThresholdCount"]) == (30, 5)  # 150 s
    iid = _instance(ec2, subnet)
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    time.sleep(0.5)
    assert _health(elbv2, arn)[iid] == INITIAL
    # The target group's settings are read when asked: at the minimums 1 s has not made 10 s.
    elbv2.modify_target_group(TargetGroupArn=arn, HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2,
                              HealthyThresholdCount=2)
    assert _health(elbv2, arn)[iid] == INITIAL
    for bad in ({"target_healthy_secs": -1}, {"target_healthy_secs": "10"}):
        assert emu.control("POST", "config", bad)[0] == 400, bad


def test_forced_unhealthy_in_every_target_group_then_cleared(emu, ec2):
    elbv2 = emu.client("elbv2")
    vpc, subnet = _vpc(ec2)
    first, second = _target_group(elbv2, vpc, "tg-1"), _target_group(elbv2, vpc, "tg-2")
    sick, well = _instance(ec2, subnet), _instance(ec2, subnet)
    emu.ok("POST", "config", {"target_healthy_secs": 0.3})
    answer = emu.ok("POST", "target-health", {"instance_id": sick, "state": "unhealthy"})
    assert answer == {"instance_id": sick, "state": "unhealthy"}
    assert emu.ok("GET", "target-health") == {"forced": [{"instance_id": sick, "state": "unhealthy"}]}
    # Not registered yet: moto's "unused" stands.
    assert _health(elbv2, first, sick) == {sick: NOT_REGISTERED}
    for arn in (first, second):
        elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": sick}, {"Id": well}])
    # Unhealthy at once, during the initial period as after it, in both target groups.
    for arn in (first, second):
        assert _health(elbv2, arn) == {sick: UNHEALTHY, well: INITIAL}
    wait_until(lambda: _health(elbv2, first)[well] == {"State": "healthy"}, timeout=5)
    for arn in (first, second):
        assert _health(elbv2, arn) == {sick: UNHEALTHY, well: {"State": "healthy"}}
    # null clears it: the target is what its registration makes it (long registered: healthy).
    assert emu.ok("POST", "target-health", {"instance_id": sick, "state": None}) == {"instance_id": sick, "state": None}
    assert emu.ok("GET", "target-health") == {"forced": []}
    for arn in (first, second):
        assert _health(elbv2, arn) == {sick: {"State": "healthy"}, well: {"State": "healthy"}}


def test_forced_state_is_for_registered_running_targets(emu, ec2):
    elbv2 = emu.client("elbv2")
    vpc, subnet = _vpc(ec2)
    arn = _target_group(elbv2, vpc, "tg-stop")
    iid = _instance(ec2, subnet)
    elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    emu.ok("POST", "target-health", {"instance_id": iid, "state": "unhealthy"})
    assert _health(elbv2, arn)[iid] == UNHEALTHY
    ec2.stop_instances(InstanceIds=[iid])
    wait_until(lambda: _health(elbv2, arn)[iid]["State"] == "unused", timeout=5)
    assert _health(elbv2, arn)[iid]["Reason"] == "Target.InvalidState"
    elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": iid}])
    assert _health(elbv2, arn, iid)[iid]["State"] == "unused"


def test_forced_state_control_api(emu):
    emu.ok("POST", "target-health", {"instance_id": "i-0123456789abcdef0", "state": "unhealthy"})
    emu.ok("POST", "target-health", {"instance_id": "i-0fedcba9876543210", "state": "unhealthy"})
    assert [f["instance_id"] for f in emu.ok("GET", "target-health")["forced"]] == [
        "i-0123456789abcdef0",
        "i-0fedcba9876543210",
    ]
    assert emu.ok("DELETE", "target-health?instance_id=i-0123456789abcdef0") == {"cleared": 1}
    assert emu.ok("DELETE", "target-health?instance_id=i-0123456789abcdef0") == {"cleared": 0}
    assert emu.ok("DELETE", "target-health") == {"cleared": 1}
    for bad in (
        {"instance_id": "i-0123456789abcdef0", "state": "healthy"},
        {"instance_id": "i-0123456789abcdef0"},
        {"state": "unhealthy"},
        {"instance_id": "", "state": "unhealthy"},
        {"instance_id": "i-0123456789abcdef0", "state": "unhealthy", "secs": 3},
        ["i-0123456789abcdef0"],
    ):
        assert emu.control("POST", "target-health", bad)[0] == 400, bad
    emu.ok("POST", "target-health", {"instance_id": "i-0123456789abcdef0", "state": "unhealthy"})
    emu.ok("POST", "reset")
    assert emu.ok("GET", "target-health") == {"forced": []}
