"""Lifecycle hooks and lifecycle actions (EC2 Auto Scaling User Guide, "Amazon EC2 Auto
Scaling lifecycle hooks", "Complete a lifecycle action").

The hooks themselves live in moto's ``AutoScalingBackend.lifecycle_hooks`` (moto's
``LifecycleHook`` objects, with the fields moto lacks filled in). This module keeps the
active lifecycle actions (``Pending:Wait`` / ``Terminating:Wait``), applies heartbeat and
global timeouts and sends the notifications; what happens before and after the wait
states is in ``phases``. Every method expects the caller to hold ``Emulator.lock``.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import time
from typing import TYPE_CHECKING, Any

from moto.autoscaling.exceptions import ValidationError

from . import notify
from .notify import LAUNCHING, TERMINATING
from .util import iso_millis, new_uuid, utcnow

if TYPE_CHECKING:
    from moto.autoscaling.models import AutoScalingBackend, FakeAutoScalingGroup, InstanceState

    from .state import Emulator, InstanceRecord

GLOBAL_TIMEOUT_CAP = 172800  # 48 hours
WAIT_STATES = {LAUNCHING: "Pending:Wait", TERMINATING: "Terminating:Wait"}


def global_timeout(heartbeat_timeout: int) -> int:
    return min(100 * heartbeat_timeout, GLOBAL_TIMEOUT_CAP)


class LifecycleAction:
    def __init__(
        self,
        hook: Any,
        instance_id: str,
        group_name: str,
        account: str,
        region: str,
        now: float,
    ) -> None:
        self.token = new_uuid()
        self.instance_id = instance_id
        self.group_name = group_name
        self.hook_name: str = hook.name
        self.transition: str = hook.lifecycle_transition
        self.account = account
        self.region = region
        self.heartbeat_timeout = int(hook.heartbeat_timeout)
        self.default_result: str = hook.default_result
        self.started_wall = utcnow()
        self.started = now
        self.global_deadline = now + global_timeout(self.heartbeat_timeout)
        self.deadline = min(now + self.heartbeat_timeout, self.global_deadline)

    def to_dict(self, now: float) -> dict[str, Any]:
        wall = utcnow()
        return {
            "token": self.token,
            "instance_id": self.instance_id,
            "group": self.group_name,
            "hook": self.hook_name,
            "transition": self.transition,
            "account": self.account,
            "region": self.region,
            "default_result": self.default_result,
            "heartbeat_timeout_secs": self.heartbeat_timeout,
            "started": iso_millis(self.started_wall),
            "heartbeat_deadline": iso_millis(wall + dt.timedelta(seconds=self.deadline - now)),
            "global_deadline": iso_millis(wall + dt.timedelta(seconds=self.global_deadline - now)),
            "secs_left": round(self.deadline - now, 3),
        }


def hooks_for(backend: AutoScalingBackend, group_name: str, transition: str) -> list[Any]:
    return [
        h
        for h in backend.lifecycle_hooks.values()
        if h.auto_scaling_group_name == group_name and h.lifecycle_transition == transition
    ]


def find_state(group: FakeAutoScalingGroup, instance_id: str) -> InstanceState | None:
    for state in group.instance_states:
        if state.instance.id == instance_id:
            return state
    return None


class LifecycleEngine:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.reset()

    def reset(self) -> None:
        self.by_token: dict[str, LifecycleAction] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()

    # ----------------------------------------------------------------- wait states
    def start_actions(
        self, group: FakeAutoScalingGroup, state: InstanceState, transition: str, hooks: list[Any]
    ) -> None:
        """Put the instance in Pending:Wait / Terminating:Wait, one action per hook."""
        now = time.monotonic()
        backend = group.autoscaling_backend
        instance_id = state.instance.id
        rec = self.emu.record(instance_id, backend.account_id, backend.region_name)
        rec.group_name = group.name
        state.lifecycle_state = WAIT_STATES[transition]
        for hook in hooks:
            action = LifecycleAction(hook, instance_id, group.name, backend.account_id, backend.region_name, now)
            rec.actions[hook.name] = action
            self.by_token[action.token] = action
            heapq.heappush(self._heap, (action.deadline, next(self._seq), action.token))
            self._notify(group, hook, action)

    def _notify(self, group: FakeAutoScalingGroup, hook: Any, action: LifecycleAction) -> None:
        metadata = getattr(hook, "notification_metadata", None)
        detail = notify.lifecycle_event_detail(
            action.token, group.name, hook.name, action.instance_id, action.transition, metadata
        )
        notify.put_event(
            action.account,
            action.region,
            "aws.autoscaling",
            notify.DETAIL_TYPES[action.transition],
            detail,
            [group.arn],
        )
        target = getattr(hook, "notification_target_arn", None)
        if target:
            message = notify.direct_lifecycle_message(
                action.account, action.token, group.name, hook.name,
                action.instance_id, action.transition, metadata,
            )
            notify.send_to_target(target, message, notify.lifecycle_subject(action.transition, action.instance_id))

    # ------------------------------------------------------------------- API calls
    def lookup(
        self,
        backend: AutoScalingBackend,
        group_name: str,
        hook_name: str,
        instance_id: str | None,
        token: str | None,
    ) -> LifecycleAction:
        """Find the active action as CompleteLifecycleAction/RecordLifecycleActionHeartbeat do."""
        if token:
            action = self.by_token.get(token)
            ok = (
                action is not None
                and action.group_name == group_name
                and action.hook_name == hook_name
                and action.account == backend.account_id
                and action.region == backend.region_name
                and (not instance_id or action.instance_id == instance_id)
            )
            if not ok or action is None:
                raise ValidationError(f"No active Lifecycle Action found with token {token}")
            return action
        if not instance_id:
            raise ValidationError("Either LifecycleActionToken or InstanceId must be specified")
        rec = self.emu.records.get(instance_id)
        action = rec.actions.get(hook_name) if rec else None
        if (
            action is None
            or action.group_name != group_name
            or action.account != backend.account_id
            or action.region != backend.region_name
        ):
            raise ValidationError(f"No active Lifecycle Action found with instance ID {instance_id}")
        return action

    def heartbeat(self, action: LifecycleAction) -> None:
        now = time.monotonic()
        action.deadline = min(now + action.heartbeat_timeout, action.global_deadline)
        heapq.heappush(self._heap, (action.deadline, next(self._seq), action.token))

    def complete(self, action: LifecycleAction, result: str) -> None:
        """Apply CONTINUE or ABANDON (from the API or a timeout)."""
        from moto.autoscaling.models import autoscaling_backends

        self.by_token.pop(action.token, None)
        rec = self.emu.records.get(action.instance_id)
        if rec is not None:
            rec.actions.pop(action.hook_name, None)
        backend = autoscaling_backends[action.account][action.region]
        group = backend.autoscaling_groups.get(action.group_name)
        state = find_state(group, action.instance_id) if group is not None else None
        if group is None or state is None or rec is None:
            return
        if result == "ABANDON":
            self.cancel_actions(rec)
        if rec.actions:
            return  # other hooks of the same transition still wait
        self.emu.phases.after_hooks(group, state, action, result)

    # ------------------------------------------------------------------ plumbing
    def cancel_actions(self, rec: InstanceRecord) -> None:
        for action in rec.actions.values():
            self.by_token.pop(action.token, None)
        rec.actions.clear()

    def forget_hook(self, backend: AutoScalingBackend, group_name: str, hook_name: str) -> list[LifecycleAction]:
        """Actions of a hook being deleted (DeleteLifecycleHook completes them)."""
        return [
            a
            for a in list(self.by_token.values())
            if a.group_name == group_name
            and a.hook_name == hook_name
            and a.account == backend.account_id
            and a.region == backend.region_name
        ]

    def tick(self, now: float) -> None:
        """Heartbeat / global timeouts: apply the hook's DefaultResult."""
        while self._heap and self._heap[0][0] <= now:
            _, _, token = heapq.heappop(self._heap)
            action = self.by_token.get(token)
            if action is not None and action.deadline <= now:
                self.complete(action, action.default_result)

    def active(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [a.to_dict(now) for a in self.by_token.values()]
