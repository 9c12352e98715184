"""IMDSv2 per simulated instance: tokens, metadata, spot/rebalance/maintenance, faults."""

from __future__ import annotations

import json
import socket
import time
import urllib.error

import pytest

from helpers import ACCOUNT, REGION, drain, instances, make_group, queue_with_rule, wait_until

TTL = {"X-aws-ec2-metadata-token-ttl-seconds": "60"}


@pytest.fixture()
def instance(emu, ec2):
    return ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="t3.small")["Instances"][0]


def test_token_rules(emu, instance):
    iid = instance["InstanceId"]
    # PUT without / with invalid TTL -> 400
    assert emu.imds(iid, "/latest/api/token", "PUT")[0] == 400
    for bad in ("0", "21601", "abc"):
        assert emu.imds(iid, "/latest/api/token", "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": bad})[0] == 400
    status, token, headers = emu.imds(iid, "/latest/api/token", "PUT", TTL)
    assert status == 200 and token
    assert headers.get("X-aws-ec2-metadata-token-ttl-seconds") == "60"
    # GET without / with a wrong token -> 401
    assert emu.imds(iid, "/latest/meta-data/instance-id")[0] == 401
    assert emu.imds(iid, "/latest/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": "nope"})[0] == 401
    ok = emu.imds(iid, "/latest/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": token.decode()})
    assert ok[0] == 200 and ok[1].decode() == iid
    # a token is bound to its instance
    other = emu.imds("i-00000000000000000", "/latest/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": token.decode()})
    assert other[0] == 404
    # X-Forwarded-For on the token PUT is refused
    assert emu.imds(iid, "/latest/api/token", "PUT", {**TTL, "X-Forwarded-For": "1.2.3.4"})[0] == 403


def test_token_expires(emu, instance):
    iid = instance["InstanceId"]
    _, token, _ = emu.imds(iid, "/latest/api/token", "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": "1"})
    hdr = {"X-aws-ec2-metadata-token": token.decode()}
    assert emu.imds(iid, "/latest/meta-data/instance-id", headers=hdr)[0] == 200
    time.sleep(1.2)
    assert emu.imds(iid, "/latest/meta-data/instance-id", headers=hdr)[0] == 401


def test_unknown_instance_is_404(emu):
    assert emu.imds("i-0123456789abcdef0", "/latest/api/token", "PUT", TTL)[0] == 404


def test_metadata_paths(emu, instance):
    iid = instance["InstanceId"]
    assert emu.metadata(iid, "/latest/meta-data/instance-id") == (200, iid)
    assert emu.metadata(iid, "/latest/meta-data/instance-type") == (200, "t3.small")
    assert emu.metadata(iid, "/latest/meta-data/ami-id") == (200, "ami-12c6146b")
    assert emu.metadata(iid, "/latest/meta-data/local-ipv4") == (200, instance["PrivateIpAddress"])
    assert emu.metadata(iid, "/latest/meta-data/placement/region") == (200, REGION)
    assert emu.metadata(iid, "/latest/meta-data/placement/availability-zone") == (
        200,
        instance["Placement"]["AvailabilityZone"],
    )
    listing = emu.metadata(iid, "/latest/meta-data/")[1].split("\n")
    assert "instance-id" in listing and "placement/" in listing and "autoscaling/" not in listing
    # not in a group: no autoscaling/ category; nothing triggered: 404s
    for path in ("autoscaling/target-lifecycle-state", "spot/instance-action", "spot/termination-time", "events/recommendations/rebalance"):
        assert emu.metadata(iid, "/latest/meta-data/" + path)[0] == 404, path
    assert emu.metadata(iid, "/latest/meta-data/events/maintenance/scheduled") == (200, "[]")
    doc = json.loads(emu.metadata(iid, "/latest/dynamic/instance-identity/document")[1])
    assert doc["instanceId"] == iid and doc["region"] == REGION and doc["accountId"] == ACCOUNT
    assert doc["instanceType"] == "t3.small" and doc["imageId"] == "ami-12c6146b"


def test_iam_credentials(emu, instance):
    iid = instance["InstanceId"]
    status, role = emu.metadata(iid, "/latest/meta-data/iam/security-credentials/")
    assert status == 200 and role == "lifeguard-emulator-instance-role"
    creds = json.loads(emu.metadata(iid, f"/latest/meta-data/iam/security-credentials/{role}")[1])
    assert set(creds) == {"Code", "Type", "AccessKeyId", "SecretAccessKey", "Token", "Expiration", "LastUpdated"}
    assert creds["Code"] == "Success" and creds["Type"] == "AWS-HMAC"
    assert creds["AccessKeyId"].startswith("ASIA") and creds["Expiration"].endswith("Z")
    emu.ok("POST", "config", {"imds_default_role_name": None})
    assert emu.metadata(iid, "/latest/meta-data/iam/security-credentials/")[0] == 404


def test_role_from_launch_template_instance_profile(emu, asg, ec2):
    iam = emu.client("iam")
    iam.create_role(RoleName="app-role", AssumeRolePolicyDocument="{}")
    iam.create_instance_profile(InstanceProfileName="app-profile")
    iam.add_role_to_instance_profile(InstanceProfileName="app-profile", RoleName="app-role")
    lt = ec2.create_launch_template(
        LaunchTemplateName="lt-iam",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "IamInstanceProfile": {"Name": "app-profile"}},
    )["LaunchTemplate"]["LaunchTemplateId"]
    make_group(asg, ec2, desired=1, template_id=lt)
    (iid,) = instances(asg)
    assert emu.metadata(iid, "/latest/meta-data/iam/security-credentials/") == (200, "app-role")
    assert emu.metadata(iid, "/latest/meta-data/autoscaling/target-lifecycle-state") == (200, "InService")


def test_spot_interruption_and_rebalance(emu, instance, sqs, events):
    iid = instance["InstanceId"]
    url = queue_with_rule(sqs, events, "ec2-events", {"source": ["aws.ec2"]})
    spot = emu.ok("POST", f"instances/{iid}/spot-interruption", {"action": "terminate", "in_secs": 120})
    status, body = emu.metadata(iid, "/latest/meta-data/spot/instance-action")
    assert status == 200
    notice = json.loads(body)
    assert notice == spot["spot_instance_action"] and notice["action"] == "terminate"
    assert notice["time"].startswith("20") and notice["time"].endswith("Z")
    assert emu.metadata(iid, "/latest/meta-data/spot/termination-time") == (200, notice["time"])
    assert emu.metadata(iid, "/latest/meta-data/events/recommendations/rebalance")[0] == 404
    emu.ok("POST", f"instances/{iid}/rebalance")
    status, body = emu.metadata(iid, "/latest/meta-data/events/recommendations/rebalance")
    assert status == 200 and set(json.loads(body)) == {"noticeTime"}
    evs = wait_until(lambda: (lambda m: m if len(m) == 2 else None)(drain(sqs, url)))
    kinds = {e["detail-type"]: e for e in evs}
    assert kinds["EC2 Spot Instance Interruption Warning"]["detail"] == {"instance-id": iid, "instance-action": "terminate"}
    assert kinds["EC2 Instance Rebalance Recommendation"]["detail"] == {"instance-id": iid}
    # stop notices have no termination-time
    emu.ok("POST", f"instances/{iid}/spot-interruption", {"action": "stop", "in_secs": 5})
    assert emu.metadata(iid, "/latest/meta-data/spot/termination-time")[0] == 404
    assert emu.control("POST", f"instances/{iid}/spot-interruption", {"action": "reboot"})[0] == 400
    assert emu.control("POST", "instances/i-0000000000000dead/spot-interruption", {})[0] == 404


def test_spot_interruption_enforced(emu, asg, ec2):
    make_group(asg, ec2, desired=1)
    (iid,) = instances(asg)
    emu.ok("POST", f"instances/{iid}/spot-interruption", {"action": "terminate", "in_secs": 0.3, "enforce": True})
    wait_until(lambda: iid not in instances(asg), timeout=5)
    assert len(instances(asg)) == 1  # replaced


def test_maintenance_events(emu, instance):
    iid = instance["InstanceId"]
    events = [{"Code": "system-reboot", "Description": "scheduled reboot", "EventId": "instance-event-1",
               "NotBefore": "21 Jan 2026 09:00:43 GMT", "NotAfter": "21 Jan 2026 09:17:23 GMT", "State": "active"}]
    emu.ok("PUT", f"instances/{iid}/maintenance", events)
    assert json.loads(emu.metadata(iid, "/latest/meta-data/events/maintenance/scheduled")[1]) == events


def test_imds_faults(emu, instance):
    iid = instance["InstanceId"]
    token = emu.imds_token(iid)
    hdr = {"X-aws-ec2-metadata-token": token}
    emu.ok("POST", f"instances/{iid}/imds-fault", {"mode": "status500", "count": 2})
    assert emu.imds(iid, "/latest/meta-data/instance-id", headers=hdr)[0] == 500
    assert emu.imds(iid, "/latest/meta-data/instance-id", headers=hdr)[0] == 500
    assert emu.imds(iid, "/latest/meta-data/instance-id", headers=hdr)[0] == 200
    emu.ok("POST", f"instances/{iid}/imds-fault", {"mode": "garbage", "count": 1})
    status, body, _ = emu.imds(iid, "/latest/meta-data/instance-id", headers=hdr)
    assert status == 200 and body.decode("utf-8", "replace") != iid
    assert emu.imds(iid, "/latest/meta-data/instance-id", headers=hdr)[1].decode() == iid
    emu.ok("POST", "config", {"imds_timeout_hang_secs": 1.5})
    emu.ok("POST", f"instances/{iid}/imds-fault", {"mode": "timeout", "count": 1})
    t0 = time.time()
    with pytest.raises((urllib.error.URLError, socket.timeout, ConnectionError, TimeoutError)):
        emu.imds(iid, "/latest/meta-data/instance-id", headers=hdr, timeout=0.5)
    assert time.time() - t0 < 1.4
    time.sleep(1.2)  # let the hung request finish
    assert emu.imds(iid, "/latest/meta-data/instance-id", headers=hdr)[0] == 200
    emu.ok("POST", f"instances/{iid}/imds-fault", {"mode": "status500", "count": 0})
    assert emu.imds(iid, "/latest/meta-data/instance-id", headers=hdr)[0] == 500
    assert emu.imds(iid, "/latest/meta-data/instance-id", headers=hdr)[0] == 500
    emu.ok("POST", f"instances/{iid}/imds-fault", {"mode": "none"})
    assert emu.imds(iid, "/latest/meta-data/instance-id", headers=hdr)[0] == 200


def test_imds_requests_are_recorded(emu, instance):
    iid = instance["InstanceId"]
    emu.metadata(iid, "/latest/meta-data/instance-type")
    calls = emu.ok("GET", f"calls?service=imds&instance_id={iid}")["calls"]
    assert [c["action"] for c in calls] == ["api/token", "meta-data/instance-type"]
    assert [c["status"] for c in calls] == [200, 200]
    assert calls[1]["params"]["path"] == "/latest/meta-data/instance-type"
