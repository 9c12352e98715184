"""Pending AMIs with state-change events; launch template versions."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from helpers import REGION, drain, instances, make_group, make_template, queue_with_rule, wait_until


def _image_state(ec2, image_id):
    return ec2.describe_images(ImageIds=[image_id])["Images"][0]["State"]


def test_create_image_pending_then_available_with_event(emu, ec2, sqs, events):
    emu.ok("POST", "config", {"ami_pending_secs": 1.0})
    url = queue_with_rule(sqs, events, "ami", {"source": ["aws.ec2"], "detail-type": ["EC2 AMI State Change"]})
    iid = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    image_id = ec2.create_image(InstanceId=iid, Name="golden-1")["ImageId"]
    assert _image_state(ec2, image_id) == "pending"
    assert emu.ok("GET", "images")["pending_images"][0]["image_id"] == image_id
    wait_until(lambda: _image_state(ec2, image_id) == "available", timeout=5)
    (event,) = wait_until(lambda: drain(sqs, url))
    assert event["source"] == "aws.ec2" and event["detail-type"] == "EC2 AMI State Change"
    assert event["resources"] == [f"arn:aws:ec2:{REGION}::image/{image_id}"]
    assert set(event["detail"]) == {"RequestId", "ImageId", "State", "ErrorMessage"}
    assert event["detail"]["ImageId"] == image_id
    assert event["detail"]["State"] == "available" and event["detail"]["ErrorMessage"] == ""


def test_register_image_and_failure(emu, ec2, sqs, events):
    emu.ok("POST", "config", {"ami_pending_secs": 30})
    url = queue_with_rule(sqs, events, "ami", {"source": ["aws.ec2"]})
    image_id = ec2.register_image(Name="registered")["ImageId"]
    assert _image_state(ec2, image_id) == "pending"
    emu.ok("POST", f"images/{image_id}/fail", {"message": "bake failed"})
    assert _image_state(ec2, image_id) == "failed"
    (event,) = wait_until(lambda: drain(sqs, url))
    assert event["detail"]["State"] == "failed" and event["detail"]["ErrorMessage"] == "bake failed"
    assert emu.control("POST", "images/ami-00000000/fail", {})[0] == 404
    ec2.deregister_image(ImageId=image_id)
    (event,) = wait_until(lambda: drain(sqs, url))
    assert event["detail"]["State"] == "deregistered"


def test_group_launches_wait_for_pending_image(emu, asg, ec2):
    emu.ok("POST", "config", {"ami_pending_secs": 1.0})
    image_id = ec2.register_image(Name="baking")["ImageId"]
    lt = make_template(ec2, "lt-pending", image_id=image_id)
    make_group(asg, ec2, desired=1, template_id=lt)
    assert instances(asg) == {}
    wait_until(lambda: len(instances(asg)) == 1, timeout=5, what="launch once the image is available")


def test_source_version_inheritance(emu, ec2):
    lt = make_template(ec2, "lt-src", UserData="ZWNobyBoaQ==", KeyName="ops",
                       TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "app", "Value": "web"}]}])
    v2 = ec2.create_launch_template_version(
        LaunchTemplateId=lt, SourceVersion="1", VersionDescription="new image", LaunchTemplateData={"ImageId": "ami-22222222"}
    )["LaunchTemplateVersion"]
    assert v2["VersionNumber"] == 2
    data = v2["LaunchTemplateData"]
    assert data["ImageId"] == "ami-22222222"
    assert data["InstanceType"] == "t3.micro" and data["KeyName"] == "ops"
    assert data["UserData"] == "ZWNobyBoaQ=="
    assert data["TagSpecifications"][0]["Tags"] == [{"Key": "app", "Value": "web"}]
    # without SourceVersion nothing is inherited
    v3 = ec2.create_launch_template_version(LaunchTemplateId=lt, LaunchTemplateData={"ImageId": "ami-33333333"})
    assert v3["LaunchTemplateVersion"]["LaunchTemplateData"] == {"ImageId": "ami-33333333"}
    # $Latest as the source, by template name
    v4 = ec2.create_launch_template_version(
        LaunchTemplateName="lt-src", SourceVersion="$Latest", LaunchTemplateData={"InstanceType": "t3.large"}
    )["LaunchTemplateVersion"]["LaunchTemplateData"]
    assert v4 == {"ImageId": "ami-33333333", "InstanceType": "t3.large"}
    with pytest.raises(ClientError) as err:
        ec2.create_launch_template_version(LaunchTemplateId=lt, SourceVersion="99", LaunchTemplateData={})
    assert err.value.response["Error"]["Code"] == "InvalidLaunchTemplateId.VersionNotFound"


def test_modify_default_and_delete_versions(emu, ec2):
    lt = make_template(ec2, "lt-del")
    for image in ("ami-2", "ami-3", "ami-4"):
        ec2.create_launch_template_version(LaunchTemplateId=lt, SourceVersion="$Latest", LaunchTemplateData={"ImageId": image + "0000000"})
    ec2.modify_launch_template(LaunchTemplateId=lt, DefaultVersion="3")
    desc = ec2.describe_launch_templates(LaunchTemplateIds=[lt])["LaunchTemplates"][0]
    assert (desc["DefaultVersionNumber"], desc["LatestVersionNumber"]) == (3, 4)
    default = ec2.describe_launch_template_versions(LaunchTemplateId=lt, Versions=["$Default"])["LaunchTemplateVersions"][0]
    assert default["VersionNumber"] == 3 and default["DefaultVersion"] is True

    resp = ec2.delete_launch_template_versions(LaunchTemplateId=lt, Versions=["1", "3", "4", "9"])
    assert [v["VersionNumber"] for v in resp["SuccessfullyDeletedLaunchTemplateVersions"]] == [1, 4]
    bad = {v["VersionNumber"]: v["ResponseError"]["Code"] for v in resp["UnsuccessfullyDeletedLaunchTemplateVersions"]}
    assert bad == {3: "launchTemplateVersionIsDefaultVersion", 9: "launchTemplateVersionDoesNotExist"}
    left = ec2.describe_launch_template_versions(LaunchTemplateId=lt)["LaunchTemplateVersions"]
    assert sorted(v["VersionNumber"] for v in left) == [2, 3]
    # numbers are never reused; lookups go by number
    v5 = ec2.create_launch_template_version(LaunchTemplateId=lt, SourceVersion="2", LaunchTemplateData={})
    assert v5["LaunchTemplateVersion"]["VersionNumber"] == 5
    assert v5["LaunchTemplateVersion"]["LaunchTemplateData"]["ImageId"] == "ami-20000000"
    latest = ec2.describe_launch_template_versions(LaunchTemplateId=lt, Versions=["$Latest"])["LaunchTemplateVersions"][0]
    assert latest["VersionNumber"] == 5
    ranged = ec2.describe_launch_template_versions(LaunchTemplateId=lt, MinVersion="3", MaxVersion="5")["LaunchTemplateVersions"]
    assert [v["VersionNumber"] for v in ranged] == [3, 5]
    with pytest.raises(ClientError):
        ec2.describe_launch_template_versions(LaunchTemplateId=lt, Versions=["4"])
    desc = ec2.describe_launch_templates(LaunchTemplateIds=[lt])["LaunchTemplates"][0]
    assert (desc["DefaultVersionNumber"], desc["LatestVersionNumber"]) == (3, 5)


def test_optional_cloudtrail_events(emu, asg, ec2, sqs, events):
    url = queue_with_rule(sqs, events, "trail", {"detail-type": ["AWS API Call via CloudTrail"]})
    iid = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    assert drain(sqs, url) == []  # off by default
    emu.ok("POST", "config", {"cloudtrail_events": True})
    image_id = ec2.create_image(InstanceId=iid, Name="web-golden", Description="nightly [bake:lt-1]", NoReboot=True)["ImageId"]
    lt = make_template(ec2, "lt-trail")
    make_group(asg, ec2, desired=0, template_id=lt)
    ec2.describe_images(ImageIds=[image_id])
    evs = wait_until(lambda: (lambda m: m if len(m) >= 3 else None)(drain(sqs, url)))
    by_name = {e["detail"]["eventName"]: e for e in evs}
    assert set(by_name) == {"CreateImage", "CreateLaunchTemplate", "CreateAutoScalingGroup"}
    image = by_name["CreateImage"]
    assert image["source"] == "aws.ec2" and image["detail"]["eventSource"] == "ec2.amazonaws.com"
    assert image["detail"]["requestParameters"] == {
        "instanceId": iid, "name": "web-golden", "description": "nightly [bake:lt-1]", "noReboot": True,
    }
    assert image["detail"]["responseElements"]["imageId"] == image_id
    group = by_name["CreateAutoScalingGroup"]["detail"]
    assert group["eventSource"] == "autoscaling.amazonaws.com" and group["responseElements"] is None
    assert group["requestParameters"]["autoScalingGroupName"] == "web"
    assert group["requestParameters"]["launchTemplate"]["launchTemplateId"] == lt
    assert group["requestParameters"]["availabilityZones"] == ["us-east-1a"]


def test_cloudtrail_names_ec2_tag_specifications_as_cloudtrail_does(emu, ec2, sqs, events):
    url = queue_with_rule(sqs, events, "trail-tags", {"detail-type": ["AWS API Call via CloudTrail"]})
    iid = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    emu.ok("POST", "config", {"cloudtrail_events": True})
    ec2.create_image(
        InstanceId=iid,
        Name="tagged-release",
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "lifeguard:release", "Value": "web"}]}],
    )
    evs = wait_until(lambda: [e for e in drain(sqs, url) if e["detail"]["eventName"] == "CreateImage"] or None)
    request = evs[0]["detail"]["requestParameters"]
    assert request["tagSpecificationSet"] == {
        "items": [{"resourceType": "image", "tags": [{"key": "lifeguard:release", "value": "web"}]}]
    }
    assert "tagSpecification" not in request
