"""EC2 StopInstances takes time, RunInstances honours ClientToken, and launches from a
launch template take TagSpecifications (ec2_instances.py).

The stopping phase is 5 s by default; the suite's 0.3 s (helpers.SHORT_TIMINGS) keeps it
observable while each test ends within a second or two."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from helpers import ec2_state, instances, make_group, wait_until


def launch(ec2, **extra) -> str:
    return ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, **extra)["Instances"][0]["InstanceId"]


def code_of(call) -> str:
    with pytest.raises(ClientError) as err:
        call()
    return err.value.response["Error"]["Code"]


def test_stop_goes_through_stopping(emu, ec2):
    iid = launch(ec2)
    answer = ec2.stop_instances(InstanceIds=[iid])["StoppingInstances"][0]
    assert answer["CurrentState"]["Name"] == "stopping" and answer["PreviousState"]["Name"] == "running"
    assert ec2_state(ec2, iid) == "stopping"
    described = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert described["State"] == {"Code": 64, "Name": "stopping"}
    assert described["StateReason"]["Code"] == "Client.UserInitiatedShutdown"
    assert 0 < emu.ok("GET", f"instances/{iid}")["stopping_secs_left"] <= 0.3
    # Stopping again changes nothing; it cannot be started before it has stopped.
    again = ec2.stop_instances(InstanceIds=[iid])["StoppingInstances"][0]
    assert again["PreviousState"]["Name"] == "stopping"
    assert code_of(lambda: ec2.start_instances(InstanceIds=[iid])) == "IncorrectInstanceState"
    # An image can be made of a stopping instance, and of a stopped one.
    first = ec2.create_image(InstanceId=iid, Name="while-stopping")["ImageId"]
    wait_until(lambda: ec2_state(ec2, iid) == "stopped", timeout=3)
    assert ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Code"] == 80
    second = ec2.create_image(InstanceId=iid, Name="when-stopped")["ImageId"]
    images = ec2.describe_images(ImageIds=[first, second])["Images"]
    assert len(images) == 2
    ec2.start_instances(InstanceIds=[iid])
    assert ec2_state(ec2, iid) == "running"


def test_default_stopping_time_and_zero(emu, ec2):
    emu.ok("POST", "reset")
    assert emu.ok("GET", "config")["instance_stopping_secs"] == 5.0
    emu.ok("POST", "config", {"instance_stopping_secs": 0})
    iid = launch(ec2)
    ec2.stop_instances(InstanceIds=[iid])
    assert ec2_state(ec2, iid) == "stopped"


def test_terminate_while_stopping_and_stop_of_terminated(emu, ec2):
    iid = launch(ec2)
    ec2.stop_instances(InstanceIds=[iid])
    ec2.terminate_instances(InstanceIds=[iid])
    assert ec2_state(ec2, iid) == "terminated"
    wait_until(lambda: emu.ok("GET", f"instances/{iid}")["stopping_secs_left"] is None, timeout=2)
    assert ec2_state(ec2, iid) == "terminated"
    assert code_of(lambda: ec2.stop_instances(InstanceIds=[iid])) == "IncorrectInstanceState"
    assert code_of(lambda: ec2.start_instances(InstanceIds=[iid])) == "IncorrectInstanceState"


def test_run_instances_client_token_is_idempotent(emu, ec2):
    first = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, ClientToken="build-1")
    again = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, ClientToken="build-1")
    assert again["ReservationId"] == first["ReservationId"]
    assert [i["InstanceId"] for i in again["Instances"]] == [i["InstanceId"] for i in first["Instances"]]
    with pytest.raises(ClientError) as err:
        ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, ClientToken="build-1", InstanceType="t3.large")
    assert err.value.response["Error"]["Code"] == "IdempotentParameterMismatch"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # Without a token (or with another one) every call launches.
    ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
    ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
    ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, ClientToken="build-2")
    launched = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert len(launched) == 4
    # A retry after the instance is gone still answers the original launch, launching nothing.
    iid = first["Instances"][0]["InstanceId"]
    ec2.terminate_instances(InstanceIds=[iid])
    late = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, ClientToken="build-1")
    assert late["Instances"][0]["InstanceId"] == iid
    assert len([i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]) == 4
    emu.ok("POST", "reset")
    assert ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, ClientToken="build-1")["ReservationId"] != first["ReservationId"]


def test_run_instances_from_a_template_version_with_tag_specifications(emu, ec2):
    template = ec2.create_launch_template(
        LaunchTemplateName="builder",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"},
    )["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(
        LaunchTemplateId=template, SourceVersion="1", LaunchTemplateData={"ImageId": "ami-2222222222222222a"}
    )
    reservation = ec2.run_instances(
        MinCount=1,
        MaxCount=1,
        LaunchTemplate={"LaunchTemplateId": template, "Version": "2"},
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "lifeguard:builder", "Value": "web"}]}],
        ClientToken="bake-web-1",
    )
    (instance,) = reservation["Instances"]
    assert instance["ImageId"] == "ami-2222222222222222a" and instance["InstanceType"] == "t3.micro"
    described = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert tags["lifeguard:builder"] == "web"
    assert tags["aws:ec2launchtemplate:id"] == template and tags["aws:ec2launchtemplate:version"] == "2"
    found = ec2.describe_instances(Filters=[{"Name": "tag:lifeguard:builder", "Values": ["web"]}])["Reservations"]
    assert [i["InstanceId"] for r in found for i in r["Instances"]] == [instance["InstanceId"]]


def test_a_group_member_stopped_in_ec2_fails_its_health_check(emu, asg, ec2):
    make_group(asg, ec2, desired=1)
    (iid,) = instances(asg)
    ec2.stop_instances(InstanceIds=[iid])
    wait_until(lambda: iid not in instances(asg), timeout=5, what="the stopped member replaced")
    assert len(instances(asg)) == 1
