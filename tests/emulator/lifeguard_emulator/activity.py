"""Scaling-activity events on the default event bus (EC2 Auto Scaling User Guide,
"Amazon EC2 Auto Scaling event reference": successful and unsuccessful scaling events).

``EC2 Instance Launch Successful`` / ``Unsuccessful`` and ``EC2 Instance Terminate
Successful`` / ``Unsuccessful``, source ``aws.autoscaling``, resources = [group ARN,
instance ARN], detail ``StatusCode, Description, AutoScalingGroupName, ActivityId,
Details {Availability Zone, Subnet ID}, RequestId, StatusMessage, EndTime, EC2InstanceId,
StartTime, Cause, Origin, Destination``.
"""

from __future__ import annotations

from typing import Any

from . import notify
from .util import iso_millis, iso_seconds, new_uuid, utcnow

LAUNCH = "launch"
TERMINATE = "terminate"


def launch_cause(before: int, after: int) -> str:
    return (
        f"At {iso_seconds()} an instance was started in response to a difference between desired "
        f"and actual capacity, increasing the capacity from {before} to {after}."
    )


def scale_in_cause(before: int, after: int) -> str:
    return (
        f"At {iso_seconds()} an instance was taken out of service in response to a difference between "
        f"desired and actual capacity, shrinking the capacity from {before} to {after}."
    )


def refresh_cause() -> str:
    return f"At {iso_seconds()} an instance was taken out of service in response to an instance refresh."


def health_cause() -> str:
    return (
        f"At {iso_seconds()} an instance was taken out of service in response to an EC2 health check "
        "indicating it has been terminated or stopped."
    )


def start(cause: str) -> tuple[str, Any, str]:
    """A new activity: (activity id, start time, cause)."""
    return new_uuid(), utcnow(), cause


def send(
    kind: str,
    ok: bool,
    group: Any,
    state: Any,
    activity: tuple[str, Any, str] | None,
    message: str = "",
) -> None:
    """Put one scaling-activity event for ``state``'s instance (``state`` may be None for a
    launch that failed before an instance existed)."""
    backend = group.autoscaling_backend
    account, region = backend.account_id, backend.region_name
    activity_id, started, cause = activity or start("")
    instance = state.instance if state is not None else None
    instance_id = instance.id if instance is not None else ""
    if kind == LAUNCH:
        detail_type = "EC2 Instance Launch " + ("Successful" if ok else "Unsuccessful")
        description = f"Launching a new EC2 instance: {instance_id}" if instance_id else "Launching a new EC2 instance"
        origin, destination = "EC2", "AutoScalingGroup"
    else:
        detail_type = "EC2 Instance Terminate " + ("Successful" if ok else "Unsuccessful")
        description = f"Terminating EC2 instance: {instance_id}"
        origin, destination = "AutoScalingGroup", "EC2"
    if not ok and message:
        description += f".  Status Reason: {message}"
    zone = getattr(state, "availability_zone", None) or ""
    subnet = getattr(instance, "subnet_id", None) or ""
    detail = {
        "StatusCode": "InProgress" if ok else "Failed",
        "Description": description,
        "AutoScalingGroupName": group.name,
        "ActivityId": activity_id,
        "Details": {"Availability Zone": zone, "Subnet ID": subnet},
        "RequestId": new_uuid(),
        "StatusMessage": "" if ok else message,
        "EndTime": iso_millis(),
        "EC2InstanceId": instance_id,
        "StartTime": iso_millis(started),
        "Cause": cause,
        "Origin": origin,
        "Destination": destination,
    }
    resources = [group.arn]
    if instance_id:
        resources.append(f"arn:aws:ec2:{region}:{account}:instance/{instance_id}")
    notify.put_event(account, region, "aws.autoscaling", detail_type, detail, resources)
