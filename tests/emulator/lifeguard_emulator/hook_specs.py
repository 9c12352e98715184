"""PutLifecycleHook / LifecycleHookSpecificationList semantics (Auto Scaling API reference:
PutLifecycleHook, LifecycleHookSpecification; User Guide: "Configure a notification target
for lifecycle notifications")."""

from __future__ import annotations

from typing import Any

from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.models import LifecycleHook

from . import notify
from .hooks import global_timeout
from .notify import LAUNCHING, TERMINATING
from .state import emulator

MAX_HEARTBEAT = 7200
DEFAULT_HEARTBEAT = 3600


def _check_timeout(timeout: int) -> None:
    minimum = int(emulator().config.min_heartbeat_timeout_secs)
    if timeout < minimum:
        raise ValidationError(
            f"1 validation error detected: Value '{timeout}' at 'heartbeatTimeout' failed to satisfy "
            f"constraint: Member must have value greater than or equal to {minimum}"
        )
    if timeout > MAX_HEARTBEAT:
        raise ValidationError(
            f"1 validation error detected: Value '{timeout}' at 'heartbeatTimeout' failed to satisfy "
            f"constraint: Member must have value less than or equal to {MAX_HEARTBEAT}"
        )


def put_hook(backend: Any, group_name: str, spec: dict[str, Any]) -> tuple[Any, bool]:
    """Create or update a lifecycle hook in moto's backend (on update only the given fields
    change). Returns (hook, whether a test notification is due: a new hook with a target,
    or a target that changed)."""
    name = spec.get("LifecycleHookName")
    if not name:
        raise ValidationError("LifecycleHookName is required")
    key = f"{group_name}_{name}"
    existing = backend.lifecycle_hooks.get(key)
    transition = spec.get("LifecycleTransition") or (existing.lifecycle_transition if existing else None)
    if transition not in (LAUNCHING, TERMINATING):
        raise ValidationError(
            f"Invalid Lifecycle Transition: {transition!r}; valid values are {LAUNCHING} and {TERMINATING}"
        )
    timeout = spec.get("HeartbeatTimeout")
    if timeout is not None:
        timeout = int(timeout)
        _check_timeout(timeout)
    result = spec.get("DefaultResult")
    if result is not None and result not in ("CONTINUE", "ABANDON"):
        raise ValidationError(f"Invalid DefaultResult {result!r}; valid values are CONTINUE and ABANDON")
    target = spec.get("NotificationTargetARN")
    role = spec.get("RoleARN")
    new_target = target if target is not None else (existing.notification_target_arn if existing else None)
    new_role = role if role is not None else (existing.role_arn if existing else None)
    if new_target and not new_role:
        # RoleARN: "Required for new lifecycle hooks, but optional when updating existing
        # hooks" -- an update keeps the role already set.
        raise ValidationError(
            "RoleARN is required when NotificationTargetARN is specified: the role allows Amazon EC2 "
            "Auto Scaling to publish to the notification target."
        )
    if target and not notify.target_exists(target):
        raise ValidationError(
            f"Unable to publish test message to notification target {target} using IAM role {role or new_role}. "
            "Please check your target and role configuration and try to put lifecycle hook again."
        )
    test_message = bool(new_target) and (existing is None or new_target != existing.notification_target_arn)
    if existing is None:
        hook = LifecycleHook(name, group_name, transition, timeout or DEFAULT_HEARTBEAT, result or "ABANDON")
        hook.role_arn = None
        hook.notification_target_arn = None
        hook.notification_metadata = None
    else:
        hook = existing
        hook.lifecycle_transition = transition
        if timeout is not None:
            hook.heartbeat_timeout = timeout
        if result is not None:
            hook.default_result = result
    if target is not None:
        hook.notification_target_arn = target or None
    if role is not None:
        hook.role_arn = role or None
    if spec.get("NotificationMetadata") is not None:
        hook.notification_metadata = spec["NotificationMetadata"] or None
    hook.global_timeout = global_timeout(int(hook.heartbeat_timeout))
    backend.lifecycle_hooks[key] = hook
    return hook, test_message


def send_test_notification(backend: Any, group: Any, hook: Any) -> None:
    target = getattr(hook, "notification_target_arn", None)
    if target:
        message = notify.test_notification_message(backend.account_id, group.name, group.arn)
        notify.send_to_target(target, message, notify.test_subject(group.name))
