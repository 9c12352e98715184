"""Events and notifications the way AWS sends them, delivered through moto's own backends.

* EventBridge: ``events_backends[account][region].put_events`` on the default bus, so
  rules and their targets (SQS, logs, archives, other buses) behave as moto implements them.
* Lifecycle-hook notification targets: SQS queue ARNs get the JSON message directly;
  SNS topic ARNs get it published (subscribed queues receive the SNS envelope).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from .util import iso_millis, new_uuid, parse_arn

log = logging.getLogger("lifeguard_emulator.notify")

LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
TEST_NOTIFICATION = "autoscaling:TEST_NOTIFICATION"

DETAIL_TYPES = {
    LAUNCHING: "EC2 Instance-launch Lifecycle Action",
    TERMINATING: "EC2 Instance-terminate Lifecycle Action",
}
# (Origin, Destination) as the EC2 Auto Scaling event reference shows them.
ORIGIN_DESTINATION = {
    LAUNCHING: ("EC2", "AutoScalingGroup"),
    TERMINATING: ("AutoScalingGroup", "EC2"),
}


def put_event(
    account: str,
    region: str,
    source: str,
    detail_type: str,
    detail: dict[str, Any],
    resources: list[str],
) -> None:
    """Put one event on the default event bus of ``account``/``region``."""
    from moto.events.models import events_backends

    entry = {
        "Source": source,
        "DetailType": detail_type,
        "Detail": json.dumps(detail),
        "Resources": resources,
    }
    try:
        events_backends[account][region].put_events([entry])
    except Exception as exc:  # delivery problems must not break the API call
        print(f"lifeguard-emulator: event {detail_type!r} not delivered: {exc}", file=sys.stderr)


def lifecycle_event_detail(
    token: str,
    group_name: str,
    hook_name: str,
    instance_id: str,
    transition: str,
    metadata: str | None,
) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "LifecycleActionToken": token,
        "AutoScalingGroupName": group_name,
        "LifecycleHookName": hook_name,
        "EC2InstanceId": instance_id,
        "LifecycleTransition": transition,
    }
    if metadata:
        detail["NotificationMetadata"] = metadata
    origin, destination = ORIGIN_DESTINATION[transition]
    detail["Origin"] = origin
    detail["Destination"] = destination
    return detail


def direct_lifecycle_message(
    account: str,
    token: str,
    group_name: str,
    hook_name: str,
    instance_id: str,
    transition: str,
    metadata: str | None,
) -> dict[str, Any]:
    origin, destination = ORIGIN_DESTINATION[transition]
    message: dict[str, Any] = {
        "Origin": origin,
        "LifecycleHookName": hook_name,
        "Destination": destination,
        "AccountId": account,
        "RequestId": new_uuid(),
        "LifecycleTransition": transition,
        "AutoScalingGroupName": group_name,
        "Service": "AWS Auto Scaling",
        "Time": iso_millis(),
        "EC2InstanceId": instance_id,
        "LifecycleActionToken": token,
    }
    if metadata:
        message["NotificationMetadata"] = metadata
    return message


def test_notification_message(account: str, group_name: str, group_arn: str) -> dict[str, Any]:
    return {
        "AccountId": account,
        "RequestId": new_uuid(),
        "AutoScalingGroupARN": group_arn,
        "AutoScalingGroupName": group_name,
        "Service": "AWS Auto Scaling",
        "Event": TEST_NOTIFICATION,
        "Time": iso_millis(),
    }


def target_exists(target_arn: str) -> bool:
    """Whether a lifecycle hook's NotificationTargetARN names an existing queue/topic."""
    arn = parse_arn(target_arn)
    if arn is None:
        return False
    try:
        if arn["service"] == "sqs":
            from moto.sqs.models import sqs_backends

            return arn["resource"] in sqs_backends[arn["account"]][arn["region"]].queues
        if arn["service"] == "sns":
            from moto.sns.models import sns_backends

            return target_arn in sns_backends[arn["account"]][arn["region"]].topics
    except Exception:
        return False
    return False


def send_to_target(target_arn: str, message: dict[str, Any], subject: str) -> bool:
    """Send ``message`` (JSON) to an SQS queue or SNS topic ARN; False if it failed."""
    arn = parse_arn(target_arn)
    if arn is None:
        return False
    body = json.dumps(message)
    try:
        if arn["service"] == "sqs":
            from moto.sqs.models import sqs_backends

            sqs_backends[arn["account"]][arn["region"]].send_message(arn["resource"], body)
            return True
        if arn["service"] == "sns":
            from moto.sns.models import sns_backends

            sns_backends[arn["account"]][arn["region"]].publish(body, arn=target_arn, subject=subject)
            return True
    except Exception as exc:
        print(f"lifeguard-emulator: notification to {target_arn} failed: {exc}", file=sys.stderr)
    return False


def lifecycle_subject(transition: str, instance_id: str) -> str:
    kind = "LAUNCHING" if transition == LAUNCHING else "TERMINATING"
    return f"Auto Scaling:  Lifecycle action '{kind}' for instance {instance_id} in progress."


def test_subject(group_name: str) -> str:
    return f'Auto Scaling: test notification for group "{group_name}"'
