"""SQS SenderId: <role id>:<instance id> for messages sent with an instance's IMDS credentials."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import urllib.parse
import urllib.request

import pytest

from helpers import REGION, client_with, make_group, instances

DEFAULT_ROLE = "lifeguard-emulator-instance-role"
MOTO_SENDER_ID = "AIDAIT2UOQQY3AUEKVGXU"
ROLE_ID = re.compile(r"AROA[A-Z0-9]{17}")


@pytest.fixture()
def instance_id(ec2):
    return ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]


def instance_creds(emu, iid: str) -> dict[str, str]:
    """What the SDK's IMDS credentials provider does: token, role name, credentials."""
    status, role = emu.metadata(iid, "/latest/meta-data/iam/security-credentials/")
    assert status == 200, role
    status, body = emu.metadata(iid, f"/latest/meta-data/iam/security-credentials/{role}")
    assert status == 200, body
    return json.loads(body)


def sqs_with(emu, creds: dict[str, str]):
    return client_with(emu, "sqs", creds)


def receive_all(sqs, url: str, **kwargs) -> dict[str, dict]:
    """body -> message, for every message in the queue (made visible again)."""
    out: dict[str, dict] = {}
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, **kwargs).get("Messages", [])
        new = [m for m in msgs if m["Body"] not in out]
        if not new:
            return out
        out.update((m["Body"], m) for m in new)


def test_sender_id_of_instance_credentials(emu, sqs, instance_id):
    creds = instance_creds(emu, instance_id)
    own = sqs_with(emu, creds)
    url = sqs.create_queue(QueueName="reports")["QueueUrl"]
    before = int(time.time() * 1000)
    own.send_message(QueueUrl=url, MessageBody="single")
    own.send_message_batch(QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "batch-a"}, {"Id": "b", "MessageBody": "batch-b"}])
    sqs.send_message(QueueUrl=url, MessageBody="other-creds")

    role = emu.ok("GET", f"instances/{instance_id}")["iam_role"]
    assert role["role_name"] == DEFAULT_ROLE
    assert ROLE_ID.fullmatch(role["role_id"]), role
    assert role["sender_id"] == f"{role['role_id']}:{instance_id}"
    assert role["access_key_ids"] == [creds["AccessKeyId"]]

    got = receive_all(sqs, url, MessageSystemAttributeNames=["SenderId", "SentTimestamp"])
    assert set(got) == {"single", "batch-a", "batch-b", "other-creds"}
    for body in ("single", "batch-a", "batch-b"):
        assert got[body]["Attributes"]["SenderId"] == f"{role['role_id']}:{instance_id}"
    # Other credentials: moto's default, an IAM user-like id (no role session).
    assert got["other-creds"]["Attributes"]["SenderId"] == MOTO_SENDER_ID
    for msg in got.values():
        sent = int(msg["Attributes"]["SentTimestamp"])
        assert before - 5000 <= sent <= int(time.time() * 1000) + 5000

    # The call record carries the SenderId the messages got.
    calls = emu.ok("GET", "calls?service=sqs")["calls"]
    senders = [(c["action"], c.get("sender_id")) for c in calls if c["action"].startswith("Send")]
    assert senders == [
        ("SendMessage", role["sender_id"]),
        ("SendMessageBatch", role["sender_id"]),
        ("SendMessage", MOTO_SENDER_ID),
    ]


@pytest.mark.parametrize(
    "ask",
    [
        {"MessageSystemAttributeNames": ["All"]},
        {"MessageSystemAttributeNames": ["SenderId", "SentTimestamp"]},
        {"AttributeNames": ["All"]},
        {"AttributeNames": ["SenderId", "SentTimestamp"]},
        {"AttributeNames": ["SenderId"], "MessageSystemAttributeNames": ["SentTimestamp"]},
    ],
)
def test_receive_returns_sender_id_and_sent_timestamp(emu, sqs, instance_id, ask):
    creds = instance_creds(emu, instance_id)
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs_with(emu, creds).send_message(QueueUrl=url, MessageBody="hello")
    (msg,) = sqs.receive_message(QueueUrl=url, **ask)["Messages"]
    assert msg["Attributes"]["SenderId"].endswith(":" + instance_id)
    assert msg["Attributes"]["SentTimestamp"].isdigit()


def test_no_attributes_unless_asked(emu, sqs, instance_id):
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs_with(emu, instance_creds(emu, instance_id)).send_message(QueueUrl=url, MessageBody="hello")
    (msg,) = sqs.receive_message(QueueUrl=url)["Messages"]
    assert "Attributes" not in msg or "SenderId" not in msg["Attributes"]


def test_role_id_stable_per_role_name(emu, ec2, sqs):
    """Without an IAM role in moto, the role id is derived from the role name: the same in
    every run and for every instance; instances differ in the session part only."""
    a, b = (
        i["InstanceId"] for i in ec2.run_instances(ImageId="ami-12c6146b", MinCount=2, MaxCount=2)["Instances"]
    )
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    for iid in (a, b):
        sqs_with(emu, instance_creds(emu, iid)).send_message(QueueUrl=url, MessageBody=iid)
    got = receive_all(sqs, url, MessageSystemAttributeNames=["SenderId"])
    expected = "AROA" + base64.b32encode(hashlib.sha256(DEFAULT_ROLE.encode()).digest()).decode()[:17]
    assert expected == "AROAPTDNLKHB7GG7T4DKD"  # the value README.md gives
    assert got[a]["Attributes"]["SenderId"] == f"{expected}:{a}"
    assert got[b]["Attributes"]["SenderId"] == f"{expected}:{b}"
    # After a reset (new credentials, new instance) the role id is the same.
    emu.ok("POST", "reset")
    iid = emu.client("ec2").run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    assert emu.ok("GET", f"instances/{iid}")["iam_role"]["role_id"] == expected


def test_role_id_of_iam_role_and_instance_profile(emu, asg, ec2, sqs):
    """With the role in moto's IAM, the role id is its RoleId (as GetRole says), and
    iam/info shows the instance profile's ARN and id."""
    iam = emu.client("iam")
    role = iam.create_role(RoleName="agent-role", AssumeRolePolicyDocument="{}")["Role"]
    profile = iam.create_instance_profile(InstanceProfileName="agent-profile")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="agent-profile", RoleName="agent-role")
    lt = ec2.create_launch_template(
        LaunchTemplateName="lt-agent",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "IamInstanceProfile": {"Name": "agent-profile"}},
    )["LaunchTemplate"]["LaunchTemplateId"]
    make_group(asg, ec2, desired=1, template_id=lt)
    (iid,) = instances(asg)

    info = json.loads(emu.metadata(iid, "/latest/meta-data/iam/info")[1])
    assert info["Code"] == "Success"
    assert info["InstanceProfileArn"] == profile["Arn"]
    assert info["InstanceProfileId"] == profile["InstanceProfileId"]

    creds = instance_creds(emu, iid)
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs_with(emu, creds).send_message(QueueUrl=url, MessageBody="x")
    (msg,) = sqs.receive_message(QueueUrl=url, MessageSystemAttributeNames=["SenderId"])["Messages"]
    assert msg["Attributes"]["SenderId"] == f"{role['RoleId']}:{iid}"
    view = emu.ok("GET", f"instances/{iid}")["iam_role"]
    assert view["role_name"] == "agent-role" and view["role_id"] == role["RoleId"]
    assert view["instance_profile_name"] == "agent-profile"


def test_iam_info_without_iam_profile_is_stable_per_profile(emu, ec2):
    a, b = (
        i["InstanceId"] for i in ec2.run_instances(ImageId="ami-12c6146b", MinCount=2, MaxCount=2)["Instances"]
    )
    info_a = json.loads(emu.metadata(a, "/latest/meta-data/iam/info")[1])
    info_b = json.loads(emu.metadata(b, "/latest/meta-data/iam/info")[1])
    assert info_a["InstanceProfileArn"] == f"arn:aws:iam::123456789012:instance-profile/{DEFAULT_ROLE}"
    assert re.fullmatch(r"AIPA[A-Z0-9]{17}", info_a["InstanceProfileId"])
    assert info_a["InstanceProfileId"] == info_b["InstanceProfileId"]


def test_presigned_query_credential(emu, sqs, instance_id):
    """Query protocol with the access key in X-Amz-Credential (no Authorization header)."""
    creds = instance_creds(emu, instance_id)
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    scope = f"{creds['AccessKeyId']}/20260101/{REGION}/sqs/aws4_request"
    query = urllib.parse.urlencode(
        {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": scope,
            "X-Amz-Date": "20260101T000000Z",
            "X-Amz-SignedHeaders": "host",
            "X-Amz-Signature": "0" * 64,
        }
    )
    body = urllib.parse.urlencode({"Action": "SendMessage", "MessageBody": "presigned", "Version": "2012-11-05"}).encode()
    req = urllib.request.Request(
        f"{url}?{query}", data=body, method="POST", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    (msg,) = sqs.receive_message(QueueUrl=url, AttributeNames=["SenderId"])["Messages"]
    assert msg["Body"] == "presigned"
    assert msg["Attributes"]["SenderId"].endswith(":" + instance_id)


def test_rotated_and_reset_credentials(emu, sqs, instance_id):
    # IMDS re-issues credentials when less than 5 minutes are left: with a 60 s lifetime
    # every fetch gives a new key. Earlier keys keep their identity.
    emu.ok("POST", "config", {"imds_credentials_ttl_secs": 60})
    first, second = instance_creds(emu, instance_id), instance_creds(emu, instance_id)
    assert first["AccessKeyId"] != second["AccessKeyId"]
    keys = emu.ok("GET", f"instances/{instance_id}")["iam_role"]["access_key_ids"]
    assert keys == [first["AccessKeyId"], second["AccessKeyId"]]
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    for creds in (first, second):
        sqs_with(emu, creds).send_message(QueueUrl=url, MessageBody=creds["AccessKeyId"])
    got = receive_all(sqs, url, AttributeNames=["SenderId"])
    assert {m["Attributes"]["SenderId"].split(":")[1] for m in got.values()} == {instance_id}
    # A reset forgets every issued key: the same key is then just some other credentials.
    emu.ok("POST", "reset")
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs_with(emu, first).send_message(QueueUrl=url, MessageBody="after-reset")
    (msg,) = sqs.receive_message(QueueUrl=url, AttributeNames=["SenderId"])["Messages"]
    assert msg["Attributes"]["SenderId"] == MOTO_SENDER_ID


def test_a_fault_can_target_one_instances_role_credentials(emu, sqs, instance_id):
    url = sqs.create_queue(QueueName="fault-by-instance")["QueueUrl"]
    emu.ok("POST", "faults", {"service": "sqs", "mode": "access_denied", "action": "SendMessage",
                              "instance_id": instance_id, "secs": 60})
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as err:
        sqs_with(emu, instance_creds(emu, instance_id)).send_message(QueueUrl=url, MessageBody="x")
    assert err.value.response["Error"]["Code"] == "AccessDeniedException"
    # Other credentials (the controller's) are not affected.
    sqs.send_message(QueueUrl=url, MessageBody="from the controller")
