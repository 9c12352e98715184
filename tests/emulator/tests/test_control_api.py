"""Control API: health, reset, config, call recorder, service faults; concurrency."""

from __future__ import annotations

import threading
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from helpers import instances, make_group, terminate_hook, wait_until


def test_health_and_config(emu):
    health = emu.ok("GET", "health")
    assert health["status"] == "ok" and health["moto_version"] == "5.2.5"
    cfg = emu.ok("POST", "config", {"deregistration_delay_secs": 5, "terminate_proceed_delay_secs": 0.2})
    assert cfg["deregistration_delay_secs"] == 5.0 and cfg["terminate_proceed_delay_secs"] == 0.2
    assert emu.ok("POST", "config", {"deregistration_delay_secs": None})["deregistration_delay_secs"] is None
    assert emu.ok("GET", "config")["ami_pending_secs"] == 0.3
    rate = emu.ok("POST", "config", {"autoscaling_rate_limit": {"per_sec": 2, "burst": 3}, "random_seed": 7})
    assert rate["autoscaling_rate_limit"] == {"per_sec": 2.0, "burst": 3} and rate["random_seed"] == 7
    for bad in (
        {"no_such_key": 1},
        {"ami_pending_secs": -1},
        {"imds_terminated_lead_secs": 1},  # replaced by terminating_activity_secs + deregistration_delay_secs
        {"event_duplicate_probability": 1.5},
        {"min_heartbeat_timeout_secs": 0},
        {"autoscaling_rate_limit": {"burst": 2}},
        {"random_seed": 1.5},
        {"terminating_activity_secs": None},
    ):
        assert emu.control("POST", "config", bad)[0] == 400, bad
    assert emu.control("GET", "nope")[0] == 404


def test_defaults_are_aws_behaviour(emu):
    emu.ok("POST", "reset")
    cfg = emu.ok("GET", "config")
    assert cfg["deregistration_delay_secs"] is None  # per group, from its load balancers
    assert cfg["terminating_activity_secs"] == 1.0
    assert cfg["launch_pending_secs"] == 2.0
    assert cfg["min_heartbeat_timeout_secs"] == 30
    assert cfg["health_check_delay_secs"] == 10.0
    assert cfg["instance_refresh_wait_secs"] == 3600.0
    assert cfg["event_duplicate_probability"] == 0.0 and cfg["event_max_delay_secs"] == 0.0
    assert cfg["random_seed"] is None and cfg["autoscaling_rate_limit"] is None
    assert "imds_terminated_lead_secs" not in cfg


def test_reset_clears_moto_and_emulator_state(emu, asg, ec2):
    make_group(asg, ec2, desired=1, hooks=[terminate_hook()])
    (iid,) = instances(asg)
    asg.terminate_instance_in_auto_scaling_group(InstanceId=iid, ShouldDecrementDesiredCapacity=True)
    emu.ok("POST", "config", {"ami_pending_secs": 9})
    wait_until(lambda: emu.ok("GET", "lifecycle-actions")["lifecycle_actions"], timeout=5)
    emu.ok("POST", "reset")
    assert emu.ok("GET", "calls")["calls"] == []
    assert asg.describe_auto_scaling_groups()["AutoScalingGroups"] == []
    assert ec2.describe_launch_templates()["LaunchTemplates"] == []
    assert emu.ok("GET", "lifecycle-actions")["lifecycle_actions"] == []
    assert emu.ok("GET", "config")["ami_pending_secs"] == 1.0


def test_call_recorder_filters(emu, asg, ec2, sqs):
    s3 = emu.client("s3")
    make_group(asg, ec2, desired=1)
    (iid,) = instances(asg)
    asg.describe_auto_scaling_instances(InstanceIds=[iid])
    url = sqs.create_queue(QueueName="q1")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="hello")
    with pytest.raises(ClientError):
        asg.complete_lifecycle_action(AutoScalingGroupName="web", LifecycleHookName="x", InstanceId=iid, LifecycleActionResult="CONTINUE")
    s3.create_bucket(Bucket="archives")
    s3.put_object(Bucket="archives", Key="logs/a.tar.gz", Body=b"x" * 10, ChecksumAlgorithm="SHA256",
                  ServerSideEncryption="AES256")
    s3.get_object(Bucket="archives", Key="logs/a.tar.gz")
    up = s3.create_multipart_upload(Bucket="archives", Key="big")
    part = s3.upload_part(Bucket="archives", Key="big", UploadId=up["UploadId"], PartNumber=1, Body=b"y" * 5)
    s3.complete_multipart_upload(Bucket="archives", Key="big", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]})
    s3.list_objects_v2(Bucket="archives", Prefix="logs/")
    s3.head_object(Bucket="archives", Key="big")

    calls = emu.ok("GET", "calls")["calls"]
    seqs = [c["seq"] for c in calls]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(c["time"].endswith("Z") for c in calls)

    by_asg = emu.ok("GET", "calls?service=autoscaling")["calls"]
    assert [c["action"] for c in by_asg] == [
        "CreateAutoScalingGroup", "DescribeAutoScalingGroups", "DescribeAutoScalingInstances", "CompleteLifecycleAction",
    ]
    failed = by_asg[-1]
    assert failed["status"] == 400 and failed["error_code"] == "ValidationError"
    assert failed["params"]["InstanceId"] == iid and failed["region"] == "us-east-1"

    mine = emu.ok("GET", f"calls?instance_id={iid}")["calls"]
    assert {c["action"] for c in mine} == {"DescribeAutoScalingInstances", "CompleteLifecycleAction"}

    send = emu.ok("GET", "calls?service=sqs&action=SendMessage")["calls"]
    assert len(send) == 1 and send[0]["params"]["MessageBody"] == "hello" and send[0]["status"] == 200

    s3_actions = [c["action"] for c in emu.ok("GET", "calls?service=s3")["calls"]]
    assert s3_actions == [
        "CreateBucket", "PutObject", "GetObject", "CreateMultipartUpload", "UploadPart",
        "CompleteMultipartUpload", "ListObjectsV2", "HeadObject",
    ]
    put = emu.ok("GET", "calls?service=s3&action=PutObject")["calls"][0]
    assert put["params"]["bucket"] == "archives" and put["params"]["key"] == "logs/a.tar.gz"
    assert put["params"]["headers"]["x-amz-server-side-encryption"] == "AES256"
    assert "x-amz-checksum-sha256" in put["params"]["headers"] or "x-amz-trailer" in put["params"]["headers"]
    upload = emu.ok("GET", "calls?action=UploadPart")["calls"][0]
    assert upload["params"]["query"]["partNumber"] == "1"

    since = calls[-1]["seq"]
    ec2.describe_instances()
    newer = emu.ok("GET", f"calls?since={since}")["calls"]
    assert [c["action"] for c in newer] == ["DescribeInstances"]


def test_s3_fault_window(emu):
    s3 = emu.client("s3")
    s3.create_bucket(Bucket="bkt")
    fault = emu.ok("POST", "faults", {"service": "s3", "mode": "unavailable", "secs": 1.0})
    assert fault["service"] == "s3" and fault["mode"] == "unavailable"
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket="bkt", Key="k", Body=b"data")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert err.value.response["Error"]["Code"] == "ServiceUnavailable"
    # other services are not affected
    emu.client("sqs").list_queues()
    time.sleep(1.1)
    s3.put_object(Bucket="bkt", Key="k", Body=b"data")
    rec = emu.ok("GET", "calls?service=s3&action=PutObject")["calls"]
    assert [(c["status"], c["error_code"]) for c in rec] == [(503, "ServiceUnavailable"), (200, None)]
    # a retrying client gets through a short window on its own
    emu.ok("POST", "faults", {"service": "s3", "mode": "throttle", "count": 2})
    retrying = emu.client("s3", retries={"total_max_attempts": 5, "mode": "standard"})
    retrying.put_object(Bucket="bkt", Key="k2", Body=b"data")
    codes = [c["error_code"] for c in emu.ok("GET", "calls?service=s3&action=PutObject")["calls"]][2:]
    assert codes == ["SlowDown", "SlowDown", None]
    assert emu.ok("GET", "faults")["faults"] == []


def test_json_service_fault_and_drop(emu, sqs):
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    emu.ok("POST", "faults", {"service": "sqs", "mode": "throttle", "count": 1, "action": "SendMessage"})
    sqs.get_queue_attributes(QueueUrl=url)  # other action unaffected
    with pytest.raises(ClientError) as err:
        sqs.send_message(QueueUrl=url, MessageBody="x")
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
    emu.ok("POST", "faults", {"service": "sqs", "mode": "drop", "count": 1})
    with pytest.raises((ConnectionClosedError, EndpointConnectionError, ConnectionError)):
        sqs.send_message(QueueUrl=url, MessageBody="x")
    sqs.send_message(QueueUrl=url, MessageBody="x")
    emu.ok("POST", "faults", {"service": "sqs", "mode": "unavailable", "secs": 60})
    assert emu.ok("DELETE", "faults?service=sqs")["cleared"] == 1
    sqs.send_message(QueueUrl=url, MessageBody="y")


def test_long_poll_does_not_block_other_calls(emu, asg, ec2, sqs):
    url = sqs.create_queue(QueueName="slow")["QueueUrl"]
    done = threading.Event()

    def poll():
        sqs.receive_message(QueueUrl=url, WaitTimeSeconds=3)
        done.set()

    threading.Thread(target=poll, daemon=True).start()
    time.sleep(0.3)
    t0 = time.time()
    make_group(asg, ec2, desired=2)
    asg.describe_auto_scaling_groups()
    assert time.time() - t0 < 2.0 and not done.is_set()
    assert done.wait(5)


def test_region_comes_from_the_signature(emu):
    west = emu.client("autoscaling", region="eu-west-1")
    ec2w = emu.client("ec2", region="eu-west-1")
    lt = ec2w.create_launch_template(LaunchTemplateName="w", LaunchTemplateData={"ImageId": "ami-1"})["LaunchTemplate"]["LaunchTemplateId"]
    west.create_auto_scaling_group(AutoScalingGroupName="w", MinSize=0, MaxSize=2, DesiredCapacity=1,
                                   LaunchTemplate={"LaunchTemplateId": lt}, AvailabilityZones=["eu-west-1a"])
    assert emu.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"] == []
    (iid,) = instances(west, "w")
    assert emu.metadata(iid, "/latest/meta-data/placement/region") == (200, "eu-west-1")
    assert emu.ok("GET", "calls?service=autoscaling")["calls"][0]["region"] == "eu-west-1"


def as_agent(emu, service):
    return boto3.client(
        service,
        endpoint_url=emu.endpoint,
        region_name="us-east-1",
        aws_access_key_id="AKIDAGENT",
        aws_secret_access_key="x",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def test_access_denied_fault_for_one_access_key(emu, sqs):
    url = sqs.create_queue(QueueName="denied")["QueueUrl"]
    # An agent signing with its own credentials lacks a permission the controller has.
    agent = as_agent(emu, "sqs")
    emu.ok("POST", "faults", {"service": "sqs", "mode": "access_denied", "action": "SendMessage",
                              "access_key": "AKIDAGENT", "secs": 60})
    with pytest.raises(ClientError) as err:
        agent.send_message(QueueUrl=url, MessageBody="x")
    assert err.value.response["Error"]["Code"] == "AccessDeniedException"
    sqs.send_message(QueueUrl=url, MessageBody="from another key")
    asg_agent = as_agent(emu, "autoscaling")
    emu.ok("POST", "faults", {"service": "autoscaling", "mode": "access_denied", "access_key": "AKIDAGENT", "count": 1})
    with pytest.raises(ClientError) as err:
        asg_agent.describe_auto_scaling_groups()
    assert err.value.response["Error"]["Code"] == "AccessDenied"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    calls = emu.ok("GET", "calls?service=autoscaling&action=DescribeAutoScalingGroups")["calls"]
    assert calls[-1]["error_code"] == "AccessDenied"
