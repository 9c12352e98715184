"""PutLifecycleHook / LifecycleHookSpecificationList validation and test notifications."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from helpers import ACCOUNT, drain, make_group, terminate_hook

TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/hook-role"


def _put(asg, **kw):
    asg.put_lifecycle_hook(AutoScalingGroupName="web", LifecycleHookName="h", LifecycleTransition=TERMINATING, **kw)


def _error(call, **kw):
    with pytest.raises(ClientError) as err:
        call(**kw)
    assert err.value.response["Error"]["Code"] == "ValidationError"
    return err.value.response["Error"]["Message"]


def test_heartbeat_timeout_bounds(emu, asg, ec2):
    make_group(asg, ec2, desired=0)
    assert "greater than or equal to 30" in _error(_put, asg=asg, HeartbeatTimeout=29)
    assert "less than or equal to 7200" in _error(_put, asg=asg, HeartbeatTimeout=7201)
    _put(asg, HeartbeatTimeout=30)
    _put(asg, HeartbeatTimeout=7200)
    _put(asg)
    hook = asg.describe_lifecycle_hooks(AutoScalingGroupName="web")["LifecycleHooks"][0]
    assert hook["HeartbeatTimeout"] == 7200  # an update keeps what it does not name
    # The same rule for hooks given to CreateAutoScalingGroup.
    message = _error(make_group, asg=asg, ec2=ec2, name="other", desired=0, hooks=[terminate_hook(timeout=5)])
    assert "heartbeatTimeout" in message
    assert asg.describe_auto_scaling_groups(AutoScalingGroupNames=["other"])["AutoScalingGroups"] == []
    # A test that needs short hooks lowers the minimum explicitly.
    emu.ok("POST", "config", {"min_heartbeat_timeout_secs": 1})
    _put(asg, HeartbeatTimeout=1)
    hook = asg.describe_lifecycle_hooks(AutoScalingGroupName="web")["LifecycleHooks"][0]
    assert hook["HeartbeatTimeout"] == 1 and hook["GlobalTimeout"] == 100
    assert hook["DefaultResult"] == "ABANDON"
    assert "NotificationTargetARN" not in hook and "RoleARN" not in hook


def test_notification_target_needs_a_role(emu, asg, ec2, sqs):
    url = sqs.create_queue(QueueName="hook-target")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    make_group(asg, ec2, desired=0)
    assert "RoleARN" in _error(_put, asg=asg, NotificationTargetARN=arn)
    assert "RoleARN" in _error(make_group, asg=asg, ec2=ec2, name="other", desired=0,
                               hooks=[terminate_hook(NotificationTargetARN=arn)])
    _put(asg, NotificationTargetARN=arn, RoleARN=ROLE)
    # An update may leave the role out: the hook keeps it.
    _put(asg, NotificationTargetARN=arn, HeartbeatTimeout=60)
    hook = asg.describe_lifecycle_hooks(AutoScalingGroupName="web")["LifecycleHooks"][0]
    assert hook["RoleARN"] == ROLE and hook["HeartbeatTimeout"] == 60


def test_test_notification_only_when_the_target_is_added(emu, asg, ec2, sqs):
    urls, arns = [], []
    for name in ("first-target", "second-target"):
        urls.append(sqs.create_queue(QueueName=name)["QueueUrl"])
        arns.append(sqs.get_queue_attributes(QueueUrl=urls[-1], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])
    make_group(asg, ec2, desired=0)
    _put(asg, NotificationTargetARN=arns[0], RoleARN=ROLE)
    assert [m["Event"] for m in drain(sqs, urls[0])] == ["autoscaling:TEST_NOTIFICATION"]
    _put(asg, NotificationTargetARN=arns[0], RoleARN=ROLE, HeartbeatTimeout=120)
    _put(asg, NotificationMetadata="more")
    assert drain(sqs, urls[0]) == []  # updating the hook sends nothing
    _put(asg, NotificationTargetARN=arns[1])
    assert [m["Event"] for m in drain(sqs, urls[1])] == ["autoscaling:TEST_NOTIFICATION"]
