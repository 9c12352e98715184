"""Lifecycle hooks and lifecycle actions (EC2 Auto Scaling User Guide, "Amazon EC2 Auto
Scaling lifecycle hooks", "Complete a lifecycle action").

The hooks themselves live in moto's ``AutoScalingBackend.lifecycle_hooks`` (moto's
``LifecycleHook`` objects, with the fields moto lacks filled in). This module keeps the
active lifecycle actions, moves instances through ``Pending:Wait`` / ``Terminating:Wait`` /
``Terminating:Proceed``, applies heartbeat and global timeouts, and sends the
notifications. Every method expects the caller to hold ``Emulator.lock``.
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
        # instance id -> monotonic time its termination completes (Terminating:Proceed).
        self.terminate_due: dict[str, float] = {}
        # instance id -> monotonic time its terminate actions are created (IMDS lead).
        self.hooks_due: dict[str, float] = {}

    # ----------------------------------------------------------------- transitions
    def on_launched(self, group: FakeAutoScalingGroup, states: list[InstanceState]) -> None:
        """New instances of ``group``: hold them in Pending:Wait if it has launch hooks."""
        hooks = hooks_for(group.autoscaling_backend, group.name, LAUNCHING)
        if not hooks:
            return
        for state in states:
            self._start_actions(group, state, LAUNCHING, hooks)

    def begin_terminate(self, group: FakeAutoScalingGroup, states: list[InstanceState]) -> None:
        """The group decided to terminate these instances (scale-in, explicit, refresh)."""
        now = time.monotonic()
        hooks = hooks_for(group.autoscaling_backend, group.name, TERMINATING)
        lead = float(self.emu.config.imds_terminated_lead_secs)
        for state in states:
            rec = self._rec(group, state.instance.id)
            self._cancel_actions(rec)
            rec.target_state = "Terminated"
            if not hooks:
                continue
            state.lifecycle_state = "Terminating"
            if lead > 0:
                self.hooks_due[state.instance.id] = now + lead
            else:
                self._start_actions(group, state, TERMINATING, hooks)
        if not hooks:
            # As moto (and AWS without hooks): leave the group and terminate right away.
            self.finish_termination(group, states)

    def on_exit_standby(self, group: FakeAutoScalingGroup, state: InstanceState) -> None:
        hooks = hooks_for(group.autoscaling_backend, group.name, LAUNCHING)
        if hooks:
            self._start_actions(group, state, LAUNCHING, hooks)

    def _start_actions(
        self, group: FakeAutoScalingGroup, state: InstanceState, transition: str, hooks: list[Any]
    ) -> None:
        now = time.monotonic()
        backend = group.autoscaling_backend
        instance_id = state.instance.id
        rec = self._rec(group, instance_id)
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
            self._cancel_actions(rec)
        if rec.actions:
            return  # other hooks of the same transition still wait
        if action.transition == TERMINATING:
            state.lifecycle_state = "Terminating:Proceed"
            delay = float(self.emu.config.terminate_proceed_delay_secs)
            self.terminate_due[action.instance_id] = time.monotonic() + delay
        elif result == "ABANDON":
            # A launch abandoned: the instance is terminated and, the group still
            # needing capacity, replaced.
            rec.target_state = "Terminated"
            state.lifecycle_state = "Terminating"
            self.emu.refresh.on_launch_abandoned(group, action.instance_id)
            self.finish_termination(group, [state])
            self.emu.scaler.reconcile(group)
        else:
            state.lifecycle_state = "InService"
            backend.update_attached_elbs(group.name)

    # ------------------------------------------------------------------ plumbing
    def _rec(self, group: FakeAutoScalingGroup, instance_id: str) -> InstanceRecord:
        backend = group.autoscaling_backend
        rec = self.emu.record(instance_id, backend.account_id, backend.region_name)
        rec.group_name = group.name
        return rec

    def _cancel_actions(self, rec: InstanceRecord) -> None:
        for action in rec.actions.values():
            self.by_token.pop(action.token, None)
        rec.actions.clear()

    def forget_instance(self, instance_id: str) -> None:
        """The instance left its group outside the hook flow (detach, force delete, EC2)."""
        rec = self.emu.records.get(instance_id)
        if rec is not None:
            self._cancel_actions(rec)
        self.terminate_due.pop(instance_id, None)
        self.hooks_due.pop(instance_id, None)

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

    def finish_termination(self, group: FakeAutoScalingGroup | None, states: list[InstanceState], ec2_backend: Any = None) -> None:
        """Remove ``states`` from ``group`` and terminate their instances in EC2."""
        ids = [s.instance.id for s in states]
        if not ids:
            return
        for instance_id in ids:
            self.terminate_due.pop(instance_id, None)
            self.hooks_due.pop(instance_id, None)
            rec = self.emu.records.get(instance_id)
            if rec is not None:
                rec.target_state = "Terminated"
                self._cancel_actions(rec)
        if group is not None:
            gone = set(ids)
            group.instance_states = [s for s in group.instance_states if s.instance.id not in gone]
            ec2_backend = group.autoscaling_backend.ec2_backend
            if group.name in group.autoscaling_backend.autoscaling_groups:
                group.autoscaling_backend.update_attached_elbs(group.name)
        if ec2_backend is None:
            return
        running = [s.instance.id for s in states if s.instance.state != "terminated"]
        if running:
            try:
                ec2_backend.terminate_instances(running)
            except Exception:
                for instance_id in running:
                    try:
                        ec2_backend.terminate_instances([instance_id])
                    except Exception:
                        pass

    # --------------------------------------------------------------------- timer
    def tick(self, now: float) -> None:
        from moto.autoscaling.models import autoscaling_backends

        # Heartbeat / global timeouts: apply the hook's DefaultResult.
        while self._heap and self._heap[0][0] <= now:
            deadline, _, token = heapq.heappop(self._heap)
            action = self.by_token.get(token)
            if action is not None and action.deadline <= now:
                self.complete(action, action.default_result)
        # Terminate actions delayed by imds_terminated_lead_secs.
        for instance_id, due in list(self.hooks_due.items()):
            if due > now:
                continue
            del self.hooks_due[instance_id]
            rec = self.emu.records.get(instance_id)
            if rec is None or rec.group_name is None:
                continue
            backend = autoscaling_backends[rec.account][rec.region]
            group = backend.autoscaling_groups.get(rec.group_name)
            state = find_state(group, instance_id) if group else None
            if group is None or state is None or state.lifecycle_state != "Terminating":
                continue
            hooks = hooks_for(backend, group.name, TERMINATING)
            if hooks:
                self._start_actions(group, state, TERMINATING, hooks)
            else:
                self.finish_termination(group, [state])
        # Terminating:Proceed -> gone from the group, terminated in EC2.
        due_ids = [i for i, t in self.terminate_due.items() if t <= now]
        if not due_ids:
            return
        by_group: dict[tuple[str, str, str | None], list[str]] = {}
        for instance_id in due_ids:
            del self.terminate_due[instance_id]
            rec = self.emu.records.get(instance_id)
            if rec is None:
                continue
            by_group.setdefault((rec.account, rec.region, rec.group_name), []).append(instance_id)
        for (account, region, group_name), ids in by_group.items():
            backend = autoscaling_backends[account][region]
            group = backend.autoscaling_groups.get(group_name) if group_name else None
            if group is not None:
                wanted = set(ids)
                states = [s for s in group.instance_states if s.instance.id in wanted]
                self.finish_termination(group, states)
            else:
                instances = []
                for instance_id in ids:
                    inst = backend.ec2_backend.get_instance_by_id(instance_id)
                    if inst is not None:
                        instances.append(inst)
                self.finish_termination(None, [_Bare(i) for i in instances], backend.ec2_backend)

    def active(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [a.to_dict(now) for a in self.by_token.values()]


class _Bare:
    """Adapter giving a bare EC2 instance the ``.instance`` attribute of an InstanceState."""

    def __init__(self, instance: Any) -> None:
        self.instance = instance
