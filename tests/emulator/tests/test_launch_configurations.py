"""Launch configurations as Auto Scaling keeps them, and groups switched between them and
launch templates (launch_configurations.py)."""

from __future__ import annotations

import base64

import pytest
from botocore.exceptions import ClientError

from helpers import group_desc, instances, make_template, wait_until

SCRIPT = "#!/bin/sh\necho hello\n"


def code_of(call) -> tuple[str, str]:
    with pytest.raises(ClientError) as err:
        call()
    return err.value.response["Error"]["Code"], err.value.response["Error"]["Message"]


def make_lc(asg, name: str, image: str = "ami-12c6146b", **extra) -> None:
    asg.create_launch_configuration(LaunchConfigurationName=name, ImageId=image, InstanceType="t3.micro", **extra)


def describe_lc(asg, name: str) -> dict:
    (found,) = asg.describe_launch_configurations(LaunchConfigurationNames=[name])["LaunchConfigurations"]
    return found


def group_on(asg, config: str, name: str = "web", desired: int = 1) -> None:
    asg.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchConfigurationName=config,
        MinSize=0,
        MaxSize=5,
        DesiredCapacity=desired,
        AvailabilityZones=["us-east-1a"],
    )


def image_ids(ec2, ids) -> set[str]:
    found = ec2.describe_instances(InstanceIds=list(ids))["Reservations"]
    return {i["ImageId"] for r in found for i in r["Instances"]}


def test_a_name_in_use_is_refused(emu, asg):
    make_lc(asg, "lc-web")
    code, message = code_of(lambda: make_lc(asg, "lc-web", image="ami-2222222222222222a"))
    assert code == "AlreadyExists" and "lc-web" in message
    assert describe_lc(asg, "lc-web")["ImageId"] == "ami-12c6146b"


def test_unset_fields_come_back_empty_and_a_naive_copy_fails(emu, asg):
    make_lc(asg, "lc-web", UserData=SCRIPT)
    lc = describe_lc(asg, "lc-web")
    assert (lc["KernelId"], lc["RamdiskId"], lc["KeyName"]) == ("", "", "")
    assert lc["ClassicLinkVPCSecurityGroups"] == [] and lc["InstanceMonitoring"] == {"Enabled": True}
    # boto3 base64-encodes UserData itself; it comes back as it went over the wire.
    assert base64.b64decode(lc["UserData"]).decode() == SCRIPT
    # A copy that sends every field back as read, empty strings included, is refused, as by
    # AWS (the Rust SDK does not check lengths; this client is told not to either).
    raw = emu.client("autoscaling", parameter_validation=False)
    copy = {k: lc[k] for k in ("ImageId", "InstanceType", "KeyName", "KernelId", "RamdiskId", "UserData")}
    code, message = code_of(lambda: raw.create_launch_configuration(LaunchConfigurationName="lc-web-2", **copy))
    assert code == "ValidationError"
    assert message.startswith("3 validation errors detected: ")
    for member in ("keyName", "kernelId", "ramdiskId"):
        assert f"Value '' at '{member}' failed to satisfy constraint: Member must have length greater than or equal to 1" in message
    assert asg.describe_launch_configurations(LaunchConfigurationNames=["lc-web-2"])["LaunchConfigurations"] == []
    # Leaving the empty ones out works, and keeps the user data as given (base64). (boto3
    # encodes UserData once more, so it is given decoded here; the Rust SDK sends it as is.)
    raw.create_launch_configuration(
        LaunchConfigurationName="lc-web-2",
        ImageId="ami-2222222222222222a",
        InstanceType=lc["InstanceType"],
        UserData=base64.b64decode(lc["UserData"]).decode(),
        InstanceMonitoring=lc["InstanceMonitoring"],
    )
    copied = describe_lc(asg, "lc-web-2")
    assert copied["UserData"] == lc["UserData"] and copied["ImageId"] == "ami-2222222222222222a"


def test_no_user_data_is_an_empty_string(emu, asg):
    make_lc(asg, "lc-plain", InstanceMonitoring={"Enabled": False})
    lc = describe_lc(asg, "lc-plain")
    assert lc["UserData"] == "" and lc["InstanceMonitoring"] == {"Enabled": False}


def test_delete_of_a_configuration_in_use(emu, asg, ec2):
    make_lc(asg, "lc-old")
    make_lc(asg, "lc-new", image="ami-2222222222222222a")
    group_on(asg, "lc-old")
    code, message = code_of(lambda: asg.delete_launch_configuration(LaunchConfigurationName="lc-old"))
    assert code == "ResourceInUse" and "lc-old" in message and "web" in message
    assert code_of(lambda: asg.delete_launch_configuration(LaunchConfigurationName="lc-none"))[0] == "ValidationError"
    asg.update_auto_scaling_group(AutoScalingGroupName="web", LaunchConfigurationName="lc-new")
    asg.delete_launch_configuration(LaunchConfigurationName="lc-old")
    assert [c["LaunchConfigurationName"] for c in asg.describe_launch_configurations()["LaunchConfigurations"]] == ["lc-new"]


def test_update_switches_the_configuration_new_instances_use(emu, asg, ec2):
    make_lc(asg, "lc-old")
    make_lc(asg, "lc-new", image="ami-2222222222222222a")
    group_on(asg, "lc-old")
    (old,) = instances(asg)
    asg.update_auto_scaling_group(AutoScalingGroupName="web", LaunchConfigurationName="lc-new", DesiredCapacity=2)
    group = group_desc(asg)
    assert group["LaunchConfigurationName"] == "lc-new" and "LaunchTemplate" not in group
    new = wait_until(lambda: set(instances(asg)) - {old}, timeout=3)
    assert image_ids(ec2, new) == {"ami-2222222222222222a"}
    assert image_ids(ec2, [old]) == {"ami-12c6146b"}
    described = {
        i["InstanceId"]: i.get("LaunchConfigurationName")
        for i in asg.describe_auto_scaling_instances(InstanceIds=[old, *new])["AutoScalingInstances"]
    }
    assert described == {old: "lc-old", **{i: "lc-new" for i in new}}
    code, message = code_of(
        lambda: asg.update_auto_scaling_group(AutoScalingGroupName="web", LaunchConfigurationName="lc-none")
    )
    assert code == "ValidationError" and "lc-none" in message


def test_switch_between_launch_template_and_configuration(emu, asg, ec2):
    template = make_template(ec2, "lt-web", image_id="ami-3333333333333333a")
    make_lc(asg, "lc-web", image="ami-2222222222222222a")
    asg.create_auto_scaling_group(
        AutoScalingGroupName="web",
        LaunchTemplate={"LaunchTemplateId": template, "Version": "1"},
        MinSize=0,
        MaxSize=5,
        DesiredCapacity=1,
        AvailabilityZones=["us-east-1a"],
    )
    # Template -> configuration.
    asg.update_auto_scaling_group(AutoScalingGroupName="web", LaunchConfigurationName="lc-web", DesiredCapacity=2)
    group = group_desc(asg)
    assert group["LaunchConfigurationName"] == "lc-web" and "LaunchTemplate" not in group
    on_lc = wait_until(lambda: [i for i in instances(asg)][1:], timeout=3)
    assert image_ids(ec2, on_lc) == {"ami-2222222222222222a"}
    # Configuration -> template: the configuration is no longer in use.
    asg.update_auto_scaling_group(
        AutoScalingGroupName="web", LaunchTemplate={"LaunchTemplateId": template, "Version": "1"}, DesiredCapacity=3
    )
    group = group_desc(asg)
    assert group["LaunchTemplate"]["LaunchTemplateId"] == template and not group.get("LaunchConfigurationName")
    on_lt = wait_until(lambda: [i for i in instances(asg)][2:], timeout=3)
    assert image_ids(ec2, on_lt) == {"ami-3333333333333333a"}
    asg.update_auto_scaling_group(AutoScalingGroupName="web", DesiredCapacity=0)
    wait_until(lambda: not instances(asg), timeout=5)
    asg.delete_launch_configuration(LaunchConfigurationName="lc-web")


def test_create_group_with_an_unknown_configuration(emu, asg):
    code, message = code_of(lambda: group_on(asg, "lc-none"))
    assert code == "ValidationError" and "lc-none" in message
    assert asg.describe_auto_scaling_groups()["AutoScalingGroups"] == []

