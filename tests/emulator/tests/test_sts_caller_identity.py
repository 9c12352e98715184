"""STS GetCallerIdentity: an instance's IMDS credentials are its role session
(UserId <role id>:<instance id>, Arn arn:aws:sts::<account>:assumed-role/<role>/<instance id>)."""

from __future__ import annotations

import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from helpers import ACCOUNT, REGION, client_with, instances, make_group
from test_sqs_sender_id import DEFAULT_ROLE, ROLE_ID, instance_creds, sqs_with

STS_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"
# moto's answer for credentials it did not issue (the SDK test keys and the like).
MOTO_USER_ID = "AKIAIOSFODNN7EXAMPLE"
MOTO_ARN = f"arn:aws:sts::{ACCOUNT}:user/moto"


@pytest.fixture()
def instance_id(ec2):
    return ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]


def sts_with(emu, creds: dict[str, str] | None = None, region: str = REGION):
    if creds is None:
        return emu.client("sts", region=region)
    return client_with(emu, "sts", creds, region)


def caller(resp: dict) -> tuple[str, str, str]:
    return resp["UserId"], resp["Arn"], resp["Account"]


def parse_xml(body: bytes) -> dict[str, str]:
    root = ET.fromstring(body)
    assert root.tag == f"{STS_NS}GetCallerIdentityResponse", body
    result = root.find(f"{STS_NS}GetCallerIdentityResult")
    assert result is not None, body
    return {child.tag[len(STS_NS) :]: child.text or "" for child in result}


# "aws-global": botocore's region name for the global endpoint sts.amazonaws.com (with an
# endpoint URL it signs the scope with "aws-global" itself; the raw tests below sign us-east-1).
@pytest.mark.parametrize("region", [REGION, "aws-global", "eu-west-1", "ap-southeast-2"])
def test_instance_credentials_are_the_role_session(emu, sqs, instance_id, region):
    creds = instance_creds(emu, instance_id)
    role = emu.ok("GET", f"instances/{instance_id}")["iam_role"]
    assert role["role_name"] == DEFAULT_ROLE and ROLE_ID.fullmatch(role["role_id"])

    got = caller(sts_with(emu, creds, region).get_caller_identity())
    assert got == (
        f"{role['role_id']}:{instance_id}",
        f"arn:aws:sts::{ACCOUNT}:assumed-role/{DEFAULT_ROLE}/{instance_id}",
        ACCOUNT,
    )
    assert got[0] == role["sender_id"]

    # Exactly the string SQS puts in SenderId for the same credentials.
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    sqs_with(emu, creds).send_message(QueueUrl=url, MessageBody="x")
    (msg,) = sqs.receive_message(QueueUrl=url, MessageSystemAttributeNames=["SenderId"])["Messages"]
    assert msg["Attributes"]["SenderId"] == got[0]

    (call,) = emu.ok("GET", "calls?service=sts&action=GetCallerIdentity")["calls"]
    assert call["status"] == 200
    assert call["region"] == region  # the scope's region as signed (botocore keeps "aws-global" with an endpoint URL)


@pytest.mark.parametrize("region", [REGION, "aws-global", "eu-west-1"])
def test_other_credentials_keep_motos_answer(emu, instance_id, region):
    instance_creds(emu, instance_id)  # an instance key exists; these are other credentials
    assert caller(sts_with(emu, region=region).get_caller_identity()) == (MOTO_USER_ID, MOTO_ARN, ACCOUNT)


def test_iam_user_keys_keep_motos_answer(emu, instance_id):
    instance_creds(emu, instance_id)
    iam = emu.client("iam")
    user = iam.create_user(UserName="operator")["User"]
    key = iam.create_access_key(UserName="operator")["AccessKey"]
    creds = {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"], "Token": None}
    assert caller(sts_with(emu, creds).get_caller_identity()) == (user["UserId"], user["Arn"], ACCOUNT)


def test_each_instance_is_its_own_session(emu, ec2):
    a, b = (i["InstanceId"] for i in ec2.run_instances(ImageId="ami-12c6146b", MinCount=2, MaxCount=2)["Instances"])
    ids = {iid: sts_with(emu, instance_creds(emu, iid)).get_caller_identity() for iid in (a, b)}
    for iid, resp in ids.items():
        assert resp["UserId"] == emu.ok("GET", f"instances/{iid}")["iam_role"]["sender_id"]
        assert resp["UserId"].endswith(":" + iid)
        assert resp["Arn"].endswith(f"/{DEFAULT_ROLE}/{iid}")
    assert ids[a]["UserId"].split(":")[0] == ids[b]["UserId"].split(":")[0]  # same role


def test_iam_role_in_moto(emu, asg, ec2):
    """With the role in moto's IAM, UserId starts with its RoleId (as GetRole says)."""
    iam = emu.client("iam")
    role = iam.create_role(RoleName="agent-role", AssumeRolePolicyDocument="{}")["Role"]
    iam.create_instance_profile(InstanceProfileName="agent-profile")
    iam.add_role_to_instance_profile(InstanceProfileName="agent-profile", RoleName="agent-role")
    lt = ec2.create_launch_template(
        LaunchTemplateName="lt-agent",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "IamInstanceProfile": {"Name": "agent-profile"}},
    )["LaunchTemplate"]["LaunchTemplateId"]
    make_group(asg, ec2, desired=1, template_id=lt)
    (iid,) = instances(asg)
    resp = sts_with(emu, instance_creds(emu, iid)).get_caller_identity()
    assert caller(resp) == (
        f"{role['RoleId']}:{iid}",
        f"arn:aws:sts::{ACCOUNT}:assumed-role/agent-role/{iid}",
        ACCOUNT,
    )


def test_rotated_and_reset_credentials(emu, instance_id):
    emu.ok("POST", "config", {"imds_credentials_ttl_secs": 60})
    first, second = instance_creds(emu, instance_id), instance_creds(emu, instance_id)
    assert first["AccessKeyId"] != second["AccessKeyId"]
    for creds in (first, second):
        assert sts_with(emu, creds).get_caller_identity()["UserId"].endswith(":" + instance_id)
    emu.ok("POST", "reset")  # forgets the issued keys
    assert caller(sts_with(emu, first).get_caller_identity()) == (MOTO_USER_ID, MOTO_ARN, ACCOUNT)


def test_partition_of_the_signing_region(emu, instance_id):
    creds = instance_creds(emu, instance_id)
    for region, partition in (("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")):
        got = _raw(emu, "POST", region, creds)
        assert got["Arn"] == f"arn:{partition}:sts::{ACCOUNT}:assumed-role/{DEFAULT_ROLE}/{instance_id}"
        assert got["UserId"].endswith(":" + instance_id)


def _raw(emu, method: str, region: str, creds: dict[str, str], host: str | None = None) -> dict[str, str]:
    """A SigV4-signed query-protocol request as the Rust SDK / AWS CLI send it (POST form
    body) or as GET with the parameters in the query string, to the emulator's endpoint."""
    params = {"Action": "GetCallerIdentity", "Version": "2011-06-15"}
    if method == "POST":
        req = AWSRequest(
            method="POST",
            url=emu.endpoint + "/",
            data=urllib.parse.urlencode(params).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        )
    else:
        req = AWSRequest(method="GET", url=emu.endpoint + "/?" + urllib.parse.urlencode(params))
    if host:
        req.headers["Host"] = host
    SigV4Auth(Credentials(creds["AccessKeyId"], creds["SecretAccessKey"], creds["Token"]), "sts", region).add_auth(req)
    prepared = req.prepare()
    out = urllib.request.Request(prepared.url, data=prepared.body or None, method=method, headers=dict(prepared.headers))
    with urllib.request.urlopen(out, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers.get_content_type() in ("text/xml", "application/xml")
        return parse_xml(resp.read())


@pytest.mark.parametrize(
    "method,region,host",
    [
        ("POST", "us-east-1", "sts.amazonaws.com"),  # global endpoint, signed for us-east-1
        ("POST", "eu-central-1", "sts.eu-central-1.amazonaws.com"),  # regional endpoint
        ("POST", "eu-central-1", None),  # Host: 127.0.0.1:PORT (endpoint URL override)
        ("GET", "us-east-1", None),
    ],
)
def test_raw_query_protocol(emu, instance_id, method, region, host):
    creds = instance_creds(emu, instance_id)
    role = emu.ok("GET", f"instances/{instance_id}")["iam_role"]
    assert _raw(emu, method, region, creds, host) == {
        "UserId": role["sender_id"],
        "Arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{DEFAULT_ROLE}/{instance_id}",
        "Account": ACCOUNT,
    }


def test_presigned_query_credential(emu, instance_id):
    """Access key in X-Amz-Credential only (no Authorization header)."""
    creds = instance_creds(emu, instance_id)
    query = urllib.parse.urlencode(
        {
            "Action": "GetCallerIdentity",
            "Version": "2011-06-15",
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{creds['AccessKeyId']}/20260101/us-east-1/sts/aws4_request",
            "X-Amz-Date": "20260101T000000Z",
            "X-Amz-SignedHeaders": "host",
            "X-Amz-Security-Token": creds["Token"],
            "X-Amz-Signature": "0" * 64,
        }
    )
    with urllib.request.urlopen(f"{emu.endpoint}/?{query}", timeout=10) as resp:
        got = parse_xml(resp.read())
    assert got["UserId"] == f"{emu.ok('GET', f'instances/{instance_id}')['iam_role']['role_id']}:{instance_id}"
    assert got["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{DEFAULT_ROLE}/{instance_id}"
