"""Plain Terminating / Pending phases: their length (AWS defaults, load balancer
deregistration delay) and what clients see meanwhile."""

from __future__ import annotations

import time

from helpers import instances, launch_hook, make_group, terminate_hook, wait_until


def _phase(emu, instance_id):
    return emu.ok("GET", f"instances/{instance_id}")["timed_phase"]


def _assert_phase_length(emu, instance_id, started, ends, secs):
    """The instance's timed phase is `ends` and lasts `secs`. It began between `started` and
    this look, so its length is what is left plus at most the time since `started`: a bound
    that holds however loaded the machine is, unlike a window on what is left."""
    phase = _phase(emu, instance_id)
    elapsed = time.time() - started
    assert phase["ends"] == ends, phase
    assert phase["secs_left"] - 0.05 <= secs <= phase["secs_left"] + elapsed + 0.05, (phase, elapsed)


def _vpc(ec2):
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    return vpc, subnet


def _target_group(elbv2, vpc, name, delay=None):
    arn = elbv2.create_target_group(Name=name, Protocol="HTTP", Port=80, VpcId=vpc)["TargetGroups"][0]["TargetGroupArn"]
    if delay is not None:
        elbv2.modify_target_group_attributes(
            TargetGroupArn=arn, Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(delay)}]
        )
    return arn


def test_default_phases_are_aws_timings(emu, asg, ec2):
    emu.ok("POST", "reset")  # the AWS defaults, not the suite's short timings
    make_group(asg, ec2, desired=1)
    (victim,) = instances(asg)
    t0 = time.time()
    asg.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=True)
    _assert_phase_length(emu, victim, t0, "terminate", 1.0)  # no load balancer: 1 s
    wait_until(lambda: victim not in instances(asg), timeout=5)
    assert time.time() - t0 >= 0.9
    asg.put_lifecycle_hook(AutoScalingGroupName="web", LifecycleHookName="ready",
                           LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING")
    launched = time.time()
    asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=1)
    (new,) = instances(asg)
    assert instances(asg)[new] == "Pending"
    _assert_phase_length(emu, new, launched, "launch", 2.0)


def test_deregistration_delay_from_target_groups(emu, asg, ec2):
    elbv2 = emu.client("elbv2")
    vpc, subnet = _vpc(ec2)
    default_tg = _target_group(elbv2, vpc, "tg-default")
    short_tg = _target_group(elbv2, vpc, "tg-short", delay=1)
    make_group(asg, ec2, desired=2, hooks=[terminate_hook()], TargetGroupARNs=[short_tg], VPCZoneIdentifier=subnet)
    a, b = sorted(instances(asg))
    targets = {t["Target"]["Id"] for t in elbv2.describe_target_health(TargetGroupArn=short_tg)["TargetHealthDescriptions"]}
    assert targets == {a, b}
    asg.terminate_instance_in_auto_scaling_group(InstanceId=a, ShouldDecrementDesiredCapacity=True)
    # 0.2 s activity (the suite's setting) + the target group's 1 s deregistration delay.
    assert 0.7 < _phase(emu, a)["secs_left"] <= 1.2
    targets = {t["Target"]["Id"] for t in elbv2.describe_target_health(TargetGroupArn=short_tg)["TargetHealthDescriptions"]}
    assert targets == {b}  # deregistered as it leaves InService
    wait_until(lambda: instances(asg)[a] == "Terminating:Wait", timeout=5)
    # Another target group with AWS's default delay (300 s): the largest delay applies.
    asg.attach_load_balancer_target_groups(AutoScalingGroupName="web", TargetGroupARNs=[default_tg])
    asg.terminate_instance_in_auto_scaling_group(InstanceId=b, ShouldDecrementDesiredCapacity=True)
    assert 299.7 < _phase(emu, b)["secs_left"] <= 300.2
    assert instances(asg)[b] == "Terminating"
    # A number in the config is used for every group instead.
    emu.ok("POST", "config", {"deregistration_delay_secs": 5})
    asg.set_desired_capacity(AutoScalingGroupName="web", DesiredCapacity=1)
    (c,) = [i for i, s in instances(asg).items() if s == "InService"]
    asg.terminate_instance_in_auto_scaling_group(InstanceId=c, ShouldDecrementDesiredCapacity=True)
    assert 4.7 < _phase(emu, c)["secs_left"] <= 5.2


def test_deregistration_delay_from_classic_connection_draining(emu, asg, ec2):
    elb = emu.client("elb")
    elb.create_load_balancer(LoadBalancerName="classic", AvailabilityZones=["us-east-1a"],
                             Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 80}])
    make_group(asg, ec2, desired=2, LoadBalancerNames=["classic"])
    a, b = sorted(instances(asg))
    asg.terminate_instance_in_auto_scaling_group(InstanceId=a, ShouldDecrementDesiredCapacity=True)
    phase = _phase(emu, a)  # connection draining disabled: no delay (may already be over)
    assert phase is None or phase["secs_left"] <= 0.2
    elb.modify_load_balancer_attributes(
        LoadBalancerName="classic",
        LoadBalancerAttributes={"ConnectionDraining": {"Enabled": True, "Timeout": 30}},
    )
    asg.terminate_instance_in_auto_scaling_group(InstanceId=b, ShouldDecrementDesiredCapacity=True)
    assert 29.7 < _phase(emu, b)["secs_left"] <= 30.2


def test_launch_hook_waits_for_plain_pending(emu, asg, ec2, sqs, events):
    from helpers import drain, queue_with_rule

    emu.ok("POST", "config", {"launch_pending_secs": 1.0})
    url = queue_with_rule(sqs, events)
    make_group(asg, ec2, desired=1, hooks=[launch_hook()])
    (iid,) = instances(asg)
    t0 = time.time()
    assert instances(asg)[iid] == "Pending"
    assert emu.metadata(iid, "/latest/meta-data/autoscaling/target-lifecycle-state") == (200, "InService")
    (event,) = wait_until(lambda: drain(sqs, url), timeout=5)
    assert time.time() - t0 >= 0.8 and event["detail"]["EC2InstanceId"] == iid
    assert instances(asg)[iid] == "Pending:Wait"
