"""Helpers shared by the tests: control API and IMDS clients, group and queue builders."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import boto3
from botocore.config import Config

EMULATOR_DIR = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
ACCOUNT = "123456789012"
# Config every test starts from (see conftest.py): AWS's phases, shortened.
SHORT_TIMINGS = {
    "ami_pending_secs": 0.3,
    "terminate_proceed_delay_secs": 0.1,
    "terminating_activity_secs": 0.2,
    "launch_pending_secs": 0.2,
    "health_check_delay_secs": 0.5,
    "instance_stopping_secs": 0.3,
    "ssm_invocation_visible_secs": 0.05,
    "ssm_pending_secs": 0.1,
    "ssm_command_secs": 0.2,
}
LIFECYCLE_ACTIONS = ["EC2 Instance-launch Lifecycle Action", "EC2 Instance-terminate Lifecycle Action"]
# Event pattern of the lifecycle action events only (not the scaling-activity events).
LIFECYCLE_PATTERN = {"source": ["aws.autoscaling"], "detail-type": LIFECYCLE_ACTIONS}


class Emulator:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def control(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.endpoint}/_lifeguard/{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, payload = self.control(method, path, body)
        assert status == 200, (status, payload)
        return payload

    def imds(
        self,
        instance_id: str,
        path: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> tuple[int, bytes, dict[str, str]]:
        req = urllib.request.Request(
            f"{self.endpoint}/_imds/{instance_id}{path}", method=method, headers=headers or {}, data=b"" if method == "PUT" else None
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read(), dict(err.headers)

    def imds_token(self, instance_id: str, ttl: int = 60) -> str:
        status, body, _ = self.imds(
            instance_id, "/latest/api/token", "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": str(ttl)}
        )
        assert status == 200, (status, body)
        return body.decode()

    def metadata(self, instance_id: str, path: str) -> tuple[int, str]:
        token = self.imds_token(instance_id)
        status, body, _ = self.imds(instance_id, path, headers={"X-aws-ec2-metadata-token": token})
        return status, body.decode("utf-8", "replace")

    def client(self, service: str, region: str = REGION, **config: Any) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(**{"retries": {"total_max_attempts": 1, "mode": "standard"}, **config}),
        )


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or predicate}: last={last!r}")


def make_template(ec2: Any, name: str = "lt-app", image_id: str = "ami-12c6146b", **data: Any) -> str:
    resp = ec2.create_launch_template(
        LaunchTemplateName=name,
        LaunchTemplateData={"ImageId": image_id, "InstanceType": "t3.micro", **data},
    )
    return resp["LaunchTemplate"]["LaunchTemplateId"]


def make_group(
    asg: Any,
    ec2: Any,
    name: str = "web",
    desired: int = 2,
    min_size: int = 0,
    max_size: int = 10,
    hooks: list[dict[str, Any]] | None = None,
    template_id: str | None = None,
    version: str = "$Latest",
    **extra: Any,
) -> str:
    template_id = template_id or make_template(ec2, f"lt-{name}")
    kwargs: dict[str, Any] = dict(
        AutoScalingGroupName=name,
        MinSize=min_size,
        MaxSize=max_size,
        DesiredCapacity=desired,
        LaunchTemplate={"LaunchTemplateId": template_id, "Version": version},
    )
    if "VPCZoneIdentifier" not in extra:
        kwargs["AvailabilityZones"] = ["us-east-1a"]
    kwargs.update(extra)
    if hooks:
        kwargs["LifecycleHookSpecificationList"] = hooks
    asg.create_auto_scaling_group(**kwargs)
    return template_id


def terminate_hook(name: str = "drain", timeout: int = 300, default: str = "CONTINUE", **extra: Any) -> dict[str, Any]:
    return {
        "LifecycleHookName": name,
        "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
        "HeartbeatTimeout": timeout,
        "DefaultResult": default,
        **extra,
    }


def launch_hook(name: str = "ready", timeout: int = 300, default: str = "ABANDON", **extra: Any) -> dict[str, Any]:
    return {
        "LifecycleHookName": name,
        "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
        "HeartbeatTimeout": timeout,
        "DefaultResult": default,
        **extra,
    }


def states_are(asg: Any, expected: list[str], group: str = "web", timeout: float = 5.0) -> dict[str, str]:
    """Wait until the group's instance states, sorted, are ``expected``; returns them."""
    return wait_until(
        lambda: (lambda s: s if sorted(s.values()) == sorted(expected) else None)(instances(asg, group)),
        timeout=timeout,
        what=f"states {expected}",
    )


def instances(asg: Any, group: str = "web") -> dict[str, str]:
    """instance id -> lifecycle state"""
    g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"]
    return {i["InstanceId"]: i["LifecycleState"] for i in (g[0]["Instances"] if g else [])}


def group_desc(asg: Any, group: str = "web") -> dict[str, Any]:
    return asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]


def ec2_state(ec2: Any, instance_id: str) -> str:
    r = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return r[0]["Instances"][0]["State"]["Name"]


def queue_with_rule(sqs: Any, events: Any, name: str = "lifeguard", pattern: dict[str, Any] | None = None) -> str:
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=f"rule-{name}", EventPattern=json.dumps(pattern or LIFECYCLE_PATTERN))
    events.put_targets(Rule=f"rule-{name}", Targets=[{"Id": "q", "Arn": arn}])
    return url


def drain(sqs: Any, url: str, wait: float = 0) -> list[dict[str, Any]]:
    out = []
    while True:
        resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=int(wait))
        msgs = resp.get("Messages", [])
        if not msgs:
            return out
        for m in msgs:
            out.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        wait = 0


def client_with(emu, service: str, creds: dict[str, str], region: str = REGION):
    """A boto3 client for ``service`` signing with ``creds`` (an instance's IMDS credentials)."""
    return boto3.client(
        service,
        endpoint_url=emu.endpoint,
        region_name=region,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["Token"],
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )
