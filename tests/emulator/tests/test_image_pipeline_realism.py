"""The EC2 calls of an image pipeline, as AWS answers them: CreateImage and its snapshots,
CreateLaunchTemplateVersion with a ClientToken, the default version, pruning old versions,
images and snapshots."""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError

from helpers import SHORT_TIMINGS, make_template, wait_until


def _new_instance(ec2) -> str:
    return ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]


def _image(ec2, image_id: str) -> dict:
    return ec2.describe_images(ImageIds=[image_id])["Images"][0]


def _snapshot_ids(ec2, image_id: str) -> list[str]:
    mappings = _image(ec2, image_id)["BlockDeviceMappings"]
    return [m["Ebs"]["SnapshotId"] for m in mappings if "Ebs" in m and m["Ebs"].get("SnapshotId")]


def _snapshot(ec2, snapshot_id: str) -> dict:
    return ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]


def _error(err: pytest.ExceptionInfo) -> tuple[int, str, str]:
    response = err.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response["Error"]["Message"]


def _version_numbers(ec2, template_id: str) -> list[int]:
    versions = ec2.describe_launch_template_versions(LaunchTemplateId=template_id)["LaunchTemplateVersions"]
    return sorted(v["VersionNumber"] for v in versions)


# ------------------------------------------------------------------ ClientToken


def test_create_launch_template_version_client_token_is_idempotent(emu, ec2):
    lt = make_template(ec2, "lt-token")
    ask = dict(SourceVersion="1", VersionDescription="bake 1", LaunchTemplateData={"ImageId": "ami-22222222"})
    first = ec2.create_launch_template_version(LaunchTemplateId=lt, ClientToken="bake-1", **ask)["LaunchTemplateVersion"]
    assert first["VersionNumber"] == 2
    # A retry with the same token and parameters (the template by name this time) answers
    # the version of the first call and creates nothing.
    again = ec2.create_launch_template_version(LaunchTemplateName="lt-token", ClientToken="bake-1", **ask)[
        "LaunchTemplateVersion"
    ]
    assert again["VersionNumber"] == 2
    assert again["LaunchTemplateData"] == first["LaunchTemplateData"]
    assert again["LaunchTemplateId"] == lt and again["VersionDescription"] == "bake 1"
    assert _version_numbers(ec2, lt) == [1, 2]
    assert ec2.describe_launch_templates(LaunchTemplateIds=[lt])["LaunchTemplates"][0]["LatestVersionNumber"] == 2

    # The same token with other parameters is refused, and creates nothing either.
    for other in (
        dict(ask, LaunchTemplateData={"ImageId": "ami-33333333"}),
        dict(ask, VersionDescription="bake 2"),
        dict(ask, SourceVersion="$Latest"),
    ):
        with pytest.raises(ClientError) as err:
            ec2.create_launch_template_version(LaunchTemplateId=lt, ClientToken="bake-1", **other)
        status, code, message = _error(err)
        assert (status, code) == (400, "IdempotentParameterMismatch")
        assert "inconsistent with arguments used in previous request" in message
    other_lt = make_template(ec2, "lt-token-other")
    with pytest.raises(ClientError) as err:
        ec2.create_launch_template_version(LaunchTemplateId=other_lt, ClientToken="bake-1", **ask)
    assert _error(err)[:2] == (400, "IdempotentParameterMismatch")
    assert _version_numbers(ec2, lt) == [1, 2]
    assert _version_numbers(ec2, other_lt) == [1]
    refused = emu.ok("GET", "calls?action=CreateLaunchTemplateVersion")["calls"][-1]
    assert (refused["status"], refused["error_code"]) == (400, "IdempotentParameterMismatch")

    # The version stays the token's answer after the default moved to it.
    ec2.modify_launch_template(LaunchTemplateId=lt, DefaultVersion="2")
    replay = ec2.create_launch_template_version(LaunchTemplateId=lt, ClientToken="bake-1", **ask)["LaunchTemplateVersion"]
    assert (replay["VersionNumber"], replay["DefaultVersion"]) == (2, True)

    # Without a token every call creates a version; a new token creates one once.
    for expected in (3, 4):
        made = ec2.create_launch_template_version(LaunchTemplateId=lt, **ask)["LaunchTemplateVersion"]
        assert made["VersionNumber"] == expected
    for _ in range(2):
        made = ec2.create_launch_template_version(LaunchTemplateId=lt, ClientToken="bake-2", **ask)["LaunchTemplateVersion"]
        assert made["VersionNumber"] == 5
    assert _version_numbers(ec2, lt) == [1, 2, 3, 4, 5]


def test_client_tokens_are_forgotten_on_reset(emu, ec2):
    lt = make_template(ec2, "lt-reset")
    ask = dict(ClientToken="same", LaunchTemplateData={"ImageId": "ami-22222222"})
    assert ec2.create_launch_template_version(LaunchTemplateId=lt, **ask)["LaunchTemplateVersion"]["VersionNumber"] == 2
    emu.ok("POST", "reset")
    lt = make_template(ec2, "lt-reset", image_id="ami-44444444")
    made = ec2.create_launch_template_version(LaunchTemplateId=lt, **ask)["LaunchTemplateVersion"]
    assert (made["LaunchTemplateId"], made["VersionNumber"]) == (lt, 2)


# -------------------------------------------------------------------- snapshots


def test_snapshots_of_a_pending_image_progress_then_complete(emu, ec2):
    # Long enough that the first look comes early in the window even on a loaded machine.
    emu.ok("POST", "config", {"ami_pending_secs": 4})
    image_id = ec2.create_image(InstanceId=_new_instance(ec2), Name="golden-1")["ImageId"]
    snapshot_ids = _snapshot_ids(ec2, image_id)
    assert snapshot_ids, "the image's BlockDeviceMappings name its snapshots"
    known = ec2.describe_snapshots(SnapshotIds=snapshot_ids)["Snapshots"]
    assert sorted(s["SnapshotId"] for s in known) == sorted(snapshot_ids)
    assert emu.ok("GET", "images")["pending_images"][0]["snapshot_ids"] == snapshot_ids
    pending = ec2.describe_snapshots(Filters=[{"Name": "status", "Values": ["pending"]}])["Snapshots"]
    assert sorted(s["SnapshotId"] for s in pending) == sorted(snapshot_ids)

    seen: list[tuple[str, str, int]] = []
    deadline = time.time() + 20
    while time.time() < deadline:
        # The snapshot first: the image turns available with its snapshots at once, so a
        # snapshot read after the image could see a transition the image read did not.
        snap = _snapshot(ec2, snapshot_ids[0])
        image_state = _image(ec2, image_id)["State"]
        seen.append((image_state, snap["State"], int(snap["Progress"].rstrip("%"))))
        if image_state == "available":
            break
        time.sleep(0.1)
    while_pending = [(state, pct) for image_state, state, pct in seen if image_state == "pending"]
    assert while_pending and {state for state, _ in while_pending} == {"pending"}
    percents = [pct for _, pct in while_pending]
    assert percents == sorted(percents), percents
    assert percents[0] < 50 and max(percents) < 100
    assert any(0 < pct < 100 for pct in percents), percents
    assert seen[-1][0] == "available"
    for snap in ec2.describe_snapshots(SnapshotIds=snapshot_ids)["Snapshots"]:
        assert (snap["State"], snap["Progress"]) == ("completed", "100%")


def test_failed_image_leaves_its_snapshots_in_error(emu, ec2):
    emu.ok("POST", "config", {"ami_pending_secs": 30})
    image_id = ec2.create_image(InstanceId=_new_instance(ec2), Name="doomed")["ImageId"]
    (snapshot_id,) = _snapshot_ids(ec2, image_id)
    assert _snapshot(ec2, snapshot_id)["State"] == "pending"
    emu.ok("POST", f"images/{image_id}/fail", {"message": "bake failed"})
    assert _image(ec2, image_id)["State"] == "failed"
    snap = _snapshot(ec2, snapshot_id)
    assert snap["State"] == "error" and snap["Progress"] != "100%"

    # Failing when the pending time is over: pending with progress until then, then error.
    emu.ok("POST", "config", {"ami_pending_secs": 0.8})
    image_id = ec2.create_image(InstanceId=_new_instance(ec2), Name="doomed-later")["ImageId"]
    (snapshot_id,) = _snapshot_ids(ec2, image_id)
    emu.ok("POST", f"images/{image_id}/fail", {"message": "late", "when": "due"})
    assert _snapshot(ec2, snapshot_id)["State"] == "pending"
    wait_until(lambda: _image(ec2, image_id)["State"] == "failed", timeout=5)
    assert _snapshot(ec2, snapshot_id)["State"] == "error"


def test_copy_image_snapshots_pending_registered_ones_untouched(emu, ec2):
    emu.ok("POST", "config", {"ami_pending_secs": 30})
    registered = ec2.register_image(Name="registered")["ImageId"]
    assert _image(ec2, registered)["State"] == "pending"
    (registered_snapshot,) = _snapshot_ids(ec2, registered)
    assert _snapshot(ec2, registered_snapshot)["State"] == "completed"
    emu.ok("POST", "config", {"ami_pending_secs": 0})
    source = ec2.create_image(InstanceId=_new_instance(ec2), Name="source")["ImageId"]
    assert _image(ec2, source)["State"] == "available"
    emu.ok("POST", "config", {"ami_pending_secs": 30})
    copy = ec2.copy_image(SourceImageId=source, SourceRegion="us-east-1", Name="copy")["ImageId"]
    (copy_snapshot,) = _snapshot_ids(ec2, copy)
    assert copy_snapshot not in _snapshot_ids(ec2, source)
    assert _snapshot(ec2, copy_snapshot)["State"] == "pending"
    assert _snapshot(ec2, _snapshot_ids(ec2, source)[0])["State"] == "completed"


def test_deregister_keeps_snapshots_and_snapshots_in_use_cannot_be_deleted(emu, ec2):
    emu.ok("POST", "config", {"ami_pending_secs": 1.0})
    image_id = ec2.create_image(InstanceId=_new_instance(ec2), Name="golden-1")["ImageId"]
    (snapshot_id,) = _snapshot_ids(ec2, image_id)
    # In use while pending and while available.
    for expected_state in ("pending", "available"):
        wait_until(lambda: _image(ec2, image_id)["State"] == expected_state, timeout=5)
        with pytest.raises(ClientError) as err:
            ec2.delete_snapshot(SnapshotId=snapshot_id)
        status, code, message = _error(err)
        assert (status, code) == (400, "InvalidSnapshot.InUse")
        assert snapshot_id in message and image_id in message

    ec2.deregister_image(ImageId=image_id)
    assert ec2.describe_images(Owners=["self"])["Images"] == []
    snap = _snapshot(ec2, snapshot_id)
    assert (snap["State"], snap["Progress"]) == ("completed", "100%")
    ec2.delete_snapshot(SnapshotId=snapshot_id)
    with pytest.raises(ClientError) as err:
        ec2.describe_snapshots(SnapshotIds=[snapshot_id])
    assert _error(err)[1] == "InvalidSnapshot.NotFound"

    # A failed image still holds its snapshot until it is deregistered.
    emu.ok("POST", "config", {"ami_pending_secs": 30})
    failed = ec2.create_image(InstanceId=_new_instance(ec2), Name="doomed")["ImageId"]
    (failed_snapshot,) = _snapshot_ids(ec2, failed)
    emu.ok("POST", f"images/{failed}/fail", {})
    with pytest.raises(ClientError) as err:
        ec2.delete_snapshot(SnapshotId=failed_snapshot)
    assert _error(err)[1] == "InvalidSnapshot.InUse"
    ec2.deregister_image(ImageId=failed)
    assert _snapshot(ec2, failed_snapshot)["State"] == "error"
    ec2.delete_snapshot(SnapshotId=failed_snapshot)

    # Deregistered while still pending: the snapshot is finished and stays.
    pending = ec2.create_image(InstanceId=_new_instance(ec2), Name="abandoned")["ImageId"]
    (pending_snapshot,) = _snapshot_ids(ec2, pending)
    ec2.deregister_image(ImageId=pending)
    assert emu.ok("GET", "images")["pending_images"] == []
    assert _snapshot(ec2, pending_snapshot)["State"] == "completed"
    ec2.delete_snapshot(SnapshotId=pending_snapshot)


# ------------------------------------------------------ launch template versions


def test_delete_launch_template_versions_refuses_only_the_default(emu, ec2):
    lt = make_template(ec2, "lt-prune")
    for image in ("ami-20000000", "ami-30000000", "ami-40000000"):
        ec2.create_launch_template_version(LaunchTemplateId=lt, SourceVersion="$Latest", LaunchTemplateData={"ImageId": image})
    ec2.modify_launch_template(LaunchTemplateId=lt, DefaultVersion="3")
    resp = ec2.delete_launch_template_versions(LaunchTemplateId=lt, Versions=["2", "3", "4"])
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp["SuccessfullyDeletedLaunchTemplateVersions"] == [
        {"LaunchTemplateId": lt, "LaunchTemplateName": "lt-prune", "VersionNumber": 2},
        {"LaunchTemplateId": lt, "LaunchTemplateName": "lt-prune", "VersionNumber": 4},
    ]
    (refused,) = resp["UnsuccessfullyDeletedLaunchTemplateVersions"]
    assert {k: refused[k] for k in ("LaunchTemplateId", "LaunchTemplateName", "VersionNumber")} == {
        "LaunchTemplateId": lt,
        "LaunchTemplateName": "lt-prune",
        "VersionNumber": 3,
    }
    assert refused["ResponseError"]["Code"] == "launchTemplateVersionIsDefaultVersion"
    assert "default version" in refused["ResponseError"]["Message"]
    assert _version_numbers(ec2, lt) == [1, 3]
    # Alone, the default version is refused the same way (HTTP 200, nothing deleted).
    resp = ec2.delete_launch_template_versions(LaunchTemplateName="lt-prune", Versions=["3"])
    assert resp["SuccessfullyDeletedLaunchTemplateVersions"] == []
    assert [v["ResponseError"]["Code"] for v in resp["UnsuccessfullyDeletedLaunchTemplateVersions"]] == [
        "launchTemplateVersionIsDefaultVersion"
    ]
    assert _version_numbers(ec2, lt) == [1, 3]


# ------------------------------------------------------------- ami_pending_secs


def test_ami_pending_secs_is_set_per_test_and_fixed_per_image(emu, ec2):
    assert emu.ok("GET", "config")["ami_pending_secs"] == SHORT_TIMINGS["ami_pending_secs"]
    emu.ok("POST", "config", {"ami_pending_secs": 600})
    image_id = ec2.create_image(InstanceId=_new_instance(ec2), Name="slow-bake")["ImageId"]
    (snapshot_id,) = _snapshot_ids(ec2, image_id)
    # A later change applies to later images only.
    emu.ok("POST", "config", {"ami_pending_secs": 0.1})
    time.sleep(0.5)
    (listed,) = emu.ok("GET", "images")["pending_images"]
    assert listed["image_id"] == image_id and 590 < listed["secs_left"] <= 600
    assert _image(ec2, image_id)["State"] == "pending"
    snap = _snapshot(ec2, snapshot_id)
    assert (snap["State"], snap["Progress"]) == ("pending", "0%")
    quick = ec2.create_image(InstanceId=_new_instance(ec2), Name="quick-bake")["ImageId"]
    wait_until(lambda: _image(ec2, quick)["State"] == "available", timeout=5)

    status, body = emu.control("POST", "config", {"ami_pending_secs": -1})
    assert status == 400 and "ami_pending_secs" in body["error"]
    emu.ok("POST", "reset")
    assert emu.ok("GET", "config")["ami_pending_secs"] == 1.0


# --------------------------------------------------------------- whole pipeline


def test_image_pipeline_end_to_end(emu, ec2):
    ssm = emu.client("ssm")
    emu.ok("POST", "config", {"ami_pending_secs": 0.5})
    lt = make_template(ec2, "lt-pipeline", UserData="ZWNobyBoaQ==", KeyName="ops")
    ssm.put_parameter(Name="/lifeguard/web/ami", Value="ami-12c6146b", Type="String", DataType="aws:ec2:image")
    instance_id = _new_instance(ec2)

    def bake(round_: int) -> tuple[str, int]:
        image_id = ec2.create_image(InstanceId=instance_id, Name=f"web-{round_}", NoReboot=True)["ImageId"]
        wait_until(lambda: _image(ec2, image_id)["State"] == "available", timeout=5)
        assert {s["State"] for s in ec2.describe_snapshots(SnapshotIds=_snapshot_ids(ec2, image_id))["Snapshots"]} == {
            "completed"
        }
        source = str(ec2.describe_launch_templates(LaunchTemplateIds=[lt])["LaunchTemplates"][0]["DefaultVersionNumber"])
        ask = dict(
            LaunchTemplateId=lt,
            SourceVersion=source,
            ClientToken=f"bake-{image_id}",
            LaunchTemplateData={"ImageId": image_id},
        )
        version = ec2.create_launch_template_version(**ask)["LaunchTemplateVersion"]
        # The retry a client makes after a lost answer lands on the same version.
        assert ec2.create_launch_template_version(**ask)["LaunchTemplateVersion"]["VersionNumber"] == version["VersionNumber"]
        assert version["LaunchTemplateData"]["KeyName"] == "ops" and version["LaunchTemplateData"]["ImageId"] == image_id
        ec2.modify_launch_template(LaunchTemplateId=lt, DefaultVersion=str(version["VersionNumber"]))
        ssm.put_parameter(Name="/lifeguard/web/ami", Value=image_id, Type="String", Overwrite=True, DataType="aws:ec2:image")
        return image_id, version["VersionNumber"]

    first_image, first_version = bake(1)
    second_image, second_version = bake(2)
    assert ssm.get_parameter(Name="/lifeguard/web/ami")["Parameter"]["Value"] == second_image

    # Prune: the old version (and, by mistake, the default one), the old image, its snapshots.
    resp = ec2.delete_launch_template_versions(LaunchTemplateId=lt, Versions=["1", str(first_version), str(second_version)])
    assert [v["VersionNumber"] for v in resp["SuccessfullyDeletedLaunchTemplateVersions"]] == [1, first_version]
    assert [
        (v["VersionNumber"], v["ResponseError"]["Code"]) for v in resp["UnsuccessfullyDeletedLaunchTemplateVersions"]
    ] == [(second_version, "launchTemplateVersionIsDefaultVersion")]
    old_snapshots = _snapshot_ids(ec2, first_image)
    with pytest.raises(ClientError) as err:
        ec2.delete_snapshot(SnapshotId=old_snapshots[0])
    assert _error(err)[1] == "InvalidSnapshot.InUse"
    ec2.deregister_image(ImageId=first_image)
    for snapshot_id in old_snapshots:
        ec2.delete_snapshot(SnapshotId=snapshot_id)
    assert [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]] == [second_image]
    assert _version_numbers(ec2, lt) == [second_version]


def test_describe_launch_templates_shows_tags_added_later(ec2):
    template = ec2.create_launch_template(
        LaunchTemplateName="tagged-later",
        LaunchTemplateData={"ImageId": "ami-12c6146b"},
        TagSpecifications=[{"ResourceType": "launch-template", "Tags": [{"Key": "team", "Value": "web"}]}],
    )["LaunchTemplate"]
    ec2.create_tags(Resources=[template["LaunchTemplateId"]], Tags=[{"Key": "lifeguard:image:stage", "Value": "bake"}])
    ec2.create_tags(Resources=[template["LaunchTemplateId"]], Tags=[{"Key": "lifeguard:image:stage", "Value": "done"}])
    (described,) = ec2.describe_launch_templates(LaunchTemplateIds=[template["LaunchTemplateId"]])["LaunchTemplates"]
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert tags == {"team": "web", "lifeguard:image:stage": "done"}


def test_create_image_tags_its_snapshots_and_refuses_a_name_in_use(ec2):
    iid = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    tags = [{"Key": "lifeguard:image:template", "Value": "lt-0123"}]
    image_id = ec2.create_image(
        InstanceId=iid,
        Name="baked-once",
        TagSpecifications=[{"ResourceType": "image", "Tags": tags}, {"ResourceType": "snapshot", "Tags": tags}],
    )["ImageId"]
    (image,) = ec2.describe_images(ImageIds=[image_id])["Images"]
    assert image["Tags"] == tags
    snapshot_ids = [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "Ebs" in m]
    assert snapshot_ids
    for snapshot in ec2.describe_snapshots(SnapshotIds=snapshot_ids)["Snapshots"]:
        assert snapshot["Tags"] == tags
    with pytest.raises(ClientError) as err:
        ec2.create_image(InstanceId=iid, Name="baked-once")
    assert err.value.response["Error"]["Code"] == "InvalidAMIName.Duplicate"
    assert image_id in err.value.response["Error"]["Message"]
