"""EC2 Instance Launch / Terminate Successful / Unsuccessful events on the default bus."""

from __future__ import annotations

from helpers import (
    ACCOUNT,
    REGION,
    drain,
    group_desc,
    instances,
    launch_hook,
    make_group,
    make_template,
    queue_with_rule,
    states_are,
    wait_until,
)

ACTIVITY = {
    "source": ["aws.autoscaling"],
    "detail-type": [{"prefix": "EC2 Instance Launch "}, {"prefix": "EC2 Instance Terminate "}],
}
DETAIL_KEYS = [
    "StatusCode", "Description", "AutoScalingGroupName", "ActivityId", "Details", "RequestId", "StatusMessage",
    "EndTime", "EC2InstanceId", "StartTime", "Cause", "Origin", "Destination",
]


def _events(sqs, url, count, timeout=5.0):
    got: list = []
    wait_until(lambda: got.extend(drain(sqs, url)) or len(got) >= count, timeout=timeout, what=f"{count} events")
    return got


def test_launch_and_terminate_successful(emu, asg, ec2, sqs, events):
    emu.ok("POST", "config", {"terminating_activity_secs": 1.0})  # room for the check in plain Terminating
    url = queue_with_rule(sqs, events, "activity", ACTIVITY)
    make_group(asg, ec2, desired=1)
    (iid,) = instances(asg)
    group_arn = group_desc(asg)["AutoScalingGroupARN"]
    (launched,) = _events(sqs, url, 1)
    assert launched["detail-type"] == "EC2 Instance Launch Successful"
    assert launched["source"] == "aws.autoscaling" and launched["account"] == ACCOUNT
    assert launched["resources"] == [group_arn, f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{iid}"]
    d = launched["detail"]
    assert list(d) == DETAIL_KEYS
    assert d["StatusCode"] == "InProgress" and d["StatusMessage"] == ""
    assert d["Description"] == f"Launching a new EC2 instance: {iid}"
    assert d["EC2InstanceId"] == iid and d["AutoScalingGroupName"] == "web"
    assert d["Details"] == {"Availability Zone": "us-east-1a", "Subnet ID": d["Details"]["Subnet ID"]}
    assert (d["Origin"], d["Destination"]) == ("EC2", "AutoScalingGroup")
    assert "increasing the capacity from 0 to 1" in d["Cause"]
    assert d["StartTime"].endswith("Z") and d["EndTime"].endswith("Z") and len(d["ActivityId"]) == 36

    asg.terminate_instance_in_auto_scaling_group(InstanceId=iid, ShouldDecrementDesiredCapacity=True)
    assert drain(sqs, url) == []  # still in plain Terminating
    (gone,) = _events(sqs, url, 1)
    assert iid not in instances(asg)
    assert gone["detail-type"] == "EC2 Instance Terminate Successful"
    d = gone["detail"]
    assert list(d) == DETAIL_KEYS
    assert d["Description"] == f"Terminating EC2 instance: {iid}" and d["StatusCode"] == "InProgress"
    assert (d["Origin"], d["Destination"]) == ("AutoScalingGroup", "EC2")
    assert "in response to a user request, shrinking the capacity from 1 to 0" in d["Cause"]


def test_launch_events_follow_the_launch_hook(emu, asg, ec2, sqs, events):
    url = queue_with_rule(sqs, events, "activity", ACTIVITY)
    make_group(asg, ec2, desired=2, hooks=[launch_hook()])
    a, b = states_are(asg, ["Pending:Wait", "Pending:Wait"])
    assert drain(sqs, url) == []  # nothing until the launch hook is done
    asg.complete_lifecycle_action(AutoScalingGroupName="web", LifecycleHookName="ready", InstanceId=a,
                                  LifecycleActionResult="CONTINUE")
    asg.complete_lifecycle_action(AutoScalingGroupName="web", LifecycleHookName="ready", InstanceId=b,
                                  LifecycleActionResult="ABANDON")
    got = {e["detail"]["EC2InstanceId"]: e for e in _events(sqs, url, 2)}
    assert got[a]["detail-type"] == "EC2 Instance Launch Successful"
    failed = got[b]
    assert failed["detail-type"] == "EC2 Instance Launch Unsuccessful"
    assert failed["detail"]["StatusCode"] == "Failed"
    assert "ABANDON" in failed["detail"]["StatusMessage"]
    assert failed["detail"]["Description"].startswith(f"Launching a new EC2 instance: {b}.  Status Reason: ")


def test_launch_unsuccessful_while_the_image_is_not_available(emu, asg, ec2, sqs, events):
    emu.ok("POST", "config", {"ami_pending_secs": 1.0})  # long enough to see the failure first
    url = queue_with_rule(sqs, events, "activity", ACTIVITY)
    source = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    image = ec2.create_image(InstanceId=source, Name="baked")["ImageId"]
    template = make_template(ec2, "lt-baked", image_id=image)
    make_group(asg, ec2, desired=1, template_id=template)
    assert instances(asg) == {}
    (failed,) = _events(sqs, url, 1)
    assert failed["detail-type"] == "EC2 Instance Launch Unsuccessful"
    assert failed["detail"]["EC2InstanceId"] == "" and image in failed["detail"]["StatusMessage"]
    assert failed["resources"] == [group_desc(asg)["AutoScalingGroupARN"]]
    (ok,) = _events(sqs, url, 1)  # once the image is available, the launch succeeds
    assert ok["detail-type"] == "EC2 Instance Launch Successful"
    assert list(instances(asg)) == [ok["detail"]["EC2InstanceId"]]
