"""An Auto Scaling instance's way into and out of its group, around the lifecycle hooks
(EC2 Auto Scaling User Guide: "Amazon EC2 Auto Scaling instance lifecycle", "Amazon EC2
Auto Scaling lifecycle hooks", "Health checks for instances in an Auto Scaling group";
ELB User Guide: "Deregistration delay").

Launch: ``Pending`` (``launch_pending_secs``, only for groups with a launch hook) →
``Pending:Wait`` (hooks) → ``InService``; groups without a launch hook put new instances
``InService`` at once, as moto does.

Termination: ``Terminating`` for ``terminating_activity_secs`` + the deregistration delay
(IMDS already says ``Terminated``, no lifecycle action exists yet) → ``Terminating:Wait``
(hooks) → ``Terminating:Proceed`` (``terminate_proceed_delay_secs``) → out of the group and
``terminated`` in EC2. Without a terminate hook the instance leaves after the plain
``Terminating`` phase.

An instance terminated directly in EC2 stays in its group until the EC2 health check
notices (``health_check_delay_secs``); then it is marked ``Unhealthy`` and terminated
through the same phases. Suspended processes are honoured as the User Guide describes them
("Suspend and resume Amazon EC2 Auto Scaling processes", "How suspended processes affect
other processes"): with ``HealthCheck`` suspended the check marks nothing (it looks again
when the process is resumed); with ``ReplaceUnhealthy`` or ``Terminate`` suspended an
instance it finds unhealthy is marked ``Unhealthy`` but stays ``InService``, and is
replaced as soon as both are resumed. An instance still ``Pending`` fails its launch
whatever is suspended.

Every method expects the caller to hold ``Emulator.lock``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from . import activity
from .hooks import find_state, hooks_for
from .notify import LAUNCHING, TERMINATING
from .scaling import suspended

if TYPE_CHECKING:
    from moto.autoscaling.models import FakeAutoScalingGroup, InstanceState

    from .hooks import LifecycleAction
    from .state import Emulator, InstanceRecord

DEFAULT_DEREGISTRATION_DELAY = 300.0


class Phases:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.reset()

    def reset(self) -> None:
        # instance id -> (monotonic due time, what happens then): "launch" (plain Pending
        # over), "terminate" (plain Terminating over), "proceed" (Terminating:Proceed
        # over), "unhealthy" (the health check notices an instance gone in EC2).
        self.due: dict[str, tuple[float, str]] = {}

    # ------------------------------------------------------------------- launch
    def on_launched(self, group: FakeAutoScalingGroup, states: list[InstanceState], cause: str) -> None:
        hooks = hooks_for(group.autoscaling_backend, group.name, LAUNCHING)
        delay = float(self.emu.config.launch_pending_secs)
        now = time.monotonic()
        for state in states:
            rec = self._rec(group, state.instance.id)
            rec.launch_activity = activity.start(cause)
            if not hooks:
                activity.send(activity.LAUNCH, True, group, state, rec.launch_activity)
                continue
            state.lifecycle_state = "Pending"
            if delay > 0:
                self.due[state.instance.id] = (now + delay, "launch")
        if hooks and delay <= 0:
            for state in states:
                self._after_pending(group, state)

    def _after_pending(self, group: FakeAutoScalingGroup, state: InstanceState) -> None:
        hooks = hooks_for(group.autoscaling_backend, group.name, LAUNCHING)
        if hooks:
            self.emu.lifecycle.start_actions(group, state, LAUNCHING, hooks)
        else:
            self.in_service(group, state)

    def in_service(self, group: FakeAutoScalingGroup, state: InstanceState) -> None:
        state.lifecycle_state = "InService"
        rec = self._rec(group, state.instance.id)
        activity.send(activity.LAUNCH, True, group, state, rec.launch_activity)
        backend = group.autoscaling_backend
        backend.update_attached_elbs(group.name)
        backend.update_attached_target_groups(group.name)

    def launch_failed(self, group: FakeAutoScalingGroup, state: InstanceState, message: str) -> None:
        """The launch is given up: the instance is terminated (no terminate hooks) and, the
        group still needing capacity, replaced."""
        rec = self._rec(group, state.instance.id)
        self.emu.lifecycle.cancel_actions(rec)
        rec.target_state = "Terminated"
        state.lifecycle_state = "Terminating"
        activity.send(activity.LAUNCH, False, group, state, rec.launch_activity, message)
        self.emu.refresh.on_launch_abandoned(group, state.instance.id)
        self.finish_termination(group, [state], event=False)
        self.emu.scaler.reconcile(group)

    # ---------------------------------------------------------------- terminate
    def begin_terminate(self, group: FakeAutoScalingGroup, states: list[InstanceState], cause: str | None = None) -> None:
        """The group decided to terminate these instances (scale-in, explicit, refresh,
        health check): plain ``Terminating`` first."""
        if not states:
            return
        delay = float(self.emu.config.terminating_activity_secs) + self.deregistration_delay(group)
        now = time.monotonic()
        for state in states:
            rec = self._rec(group, state.instance.id)
            self.emu.lifecycle.cancel_actions(rec)
            rec.target_state = "Terminated"
            state.lifecycle_state = "Terminating"
            rec.terminate_activity = activity.start(cause or _user_cause())
            self.due.pop(state.instance.id, None)
            if delay > 0:
                self.due[state.instance.id] = (now + delay, "terminate")
        if delay <= 0:
            self._after_terminating(group, states)

    def _after_terminating(self, group: FakeAutoScalingGroup, states: list[InstanceState]) -> None:
        hooks = hooks_for(group.autoscaling_backend, group.name, TERMINATING)
        if not hooks:
            self.finish_termination(group, states)
            return
        for state in states:
            self.emu.lifecycle.start_actions(group, state, TERMINATING, hooks)

    def after_hooks(self, group: FakeAutoScalingGroup, state: InstanceState, action: LifecycleAction, result: str) -> None:
        """Every action of the instance's wait state is complete."""
        if action.transition == TERMINATING:
            state.lifecycle_state = "Terminating:Proceed"
            delay = float(self.emu.config.terminate_proceed_delay_secs)
            self.due[state.instance.id] = (time.monotonic() + delay, "proceed")
        elif result == "ABANDON":
            self.launch_failed(
                group,
                state,
                "Instance failed to complete user's Lifecycle Action: Lifecycle Action with token "
                f"{action.token} was abandoned: Lifecycle Action Completed with ABANDON Result",
            )
        else:
            self.in_service(group, state)

    def deregistration_delay(self, group: FakeAutoScalingGroup) -> float:
        """Config ``deregistration_delay_secs``, or the group's: the largest deregistration
        delay of its target groups and connection-draining timeout of its classic load
        balancers (0 without any)."""
        configured = self.emu.config.deregistration_delay_secs
        if configured is not None:
            return float(configured)
        backend = group.autoscaling_backend
        delays = [0.0]
        if group.target_group_arns:
            from moto.elbv2.models import elbv2_backends

            target_groups = elbv2_backends[backend.account_id][backend.region_name].target_groups
            for arn in group.target_group_arns:
                tg = target_groups.get(arn)
                if tg is not None:
                    value = tg.attributes.get("deregistration_delay.timeout_seconds", DEFAULT_DEREGISTRATION_DELAY)
                    delays.append(_float(value, DEFAULT_DEREGISTRATION_DELAY))
        if group.load_balancer_names:
            from moto.elb.models import elb_backends

            balancers = elb_backends[backend.account_id][backend.region_name].load_balancers
            for name in group.load_balancer_names:
                lb = balancers.get(name)
                draining = lb.attributes.get("connection_draining") if lb is not None else None
                if not isinstance(draining, dict):
                    continue
                # moto keeps the keys as given by ModifyLoadBalancerAttributes (Enabled,
                # Timeout) and adds its own "timeout": 300 when "timeout" is missing.
                enabled = draining.get("Enabled", draining.get("enabled"))
                timeout = draining.get("Timeout", draining.get("timeout", DEFAULT_DEREGISTRATION_DELAY))
                if str(enabled).lower() == "true":
                    delays.append(_float(timeout, DEFAULT_DEREGISTRATION_DELAY))
        return max(delays)

    def finish_termination(
        self,
        group: FakeAutoScalingGroup | None,
        states: list[Any],
        ec2_backend: Any = None,
        event: bool = True,
    ) -> None:
        """Remove ``states`` from ``group`` and terminate their instances in EC2."""
        ids = [s.instance.id for s in states]
        if not ids:
            return
        for instance_id in ids:
            self.due.pop(instance_id, None)
            rec = self.emu.records.get(instance_id)
            if rec is not None:
                rec.target_state = "Terminated"
                self.emu.lifecycle.cancel_actions(rec)
        if group is not None:
            gone = set(ids)
            group.instance_states = [s for s in group.instance_states if s.instance.id not in gone]
            backend = group.autoscaling_backend
            ec2_backend = backend.ec2_backend
            if group.name in backend.autoscaling_groups:
                backend.update_attached_elbs(group.name)
                backend.update_attached_target_groups(group.name)
        failed: dict[str, str] = {}
        if ec2_backend is not None:
            running = [s.instance.id for s in states if s.instance.state != "terminated"]
            if running:
                try:
                    ec2_backend.terminate_instances(running)
                except Exception:
                    for instance_id in running:
                        try:
                            ec2_backend.terminate_instances([instance_id])
                        except Exception as exc:
                            failed[instance_id] = str(exc) or type(exc).__name__
        if group is None or not event:
            return
        for state in states:
            rec = self.emu.records.get(state.instance.id)
            act = rec.terminate_activity if rec is not None and rec.terminate_activity else activity.start(_user_cause())
            message = failed.get(state.instance.id, "")
            activity.send(activity.TERMINATE, not message, group, state, act, message)

    # ------------------------------------------------------- gone in EC2 directly
    def on_ec2_terminated(self, backend: Any, instance_ids: list[str]) -> None:
        """Group members terminated (or stopped) in EC2 directly -- TerminateInstances, an
        enforced spot interruption: the EC2 health check notices after
        ``health_check_delay_secs``."""
        gone = set(instance_ids)
        delay = float(self.emu.config.health_check_delay_secs)
        now = time.monotonic()
        noticed = []
        for group in list(backend.autoscaling_groups.values()):
            for state in group.instance_states:
                instance_id = state.instance.id
                if instance_id not in gone:
                    continue
                self._rec(group, instance_id).target_state = "Terminated"
                lifecycle = state.lifecycle_state
                if lifecycle.startswith("Terminating") or lifecycle == "Standby":
                    continue  # already leaving; Standby instances are not health checked
                if self.due.get(instance_id, (0.0, ""))[1] == "unhealthy":
                    continue
                if delay > 0:
                    self.due[instance_id] = (now + delay, "unhealthy")
                else:
                    noticed.append((group, state))
        for group, state in noticed:
            self._unhealthy(group, state)

    def _unhealthy(self, group: FakeAutoScalingGroup, state: InstanceState) -> None:
        lifecycle = state.lifecycle_state
        if lifecycle.startswith("Pending"):
            state.health_status = "Unhealthy"
            self.launch_failed(
                group, state,
                "Instance became unhealthy while waiting for instance to be in InService state. "
                "Termination Reason: Client.UserInitiatedShutdown: User initiated shutdown",
            )
            return
        if "HealthCheck" in suspended(group):
            return  # not marked; checked again when HealthCheck is resumed (recheck_health)
        state.health_status = "Unhealthy"
        if lifecycle == "InService":
            self.replace_unhealthy(group)

    def replace_unhealthy(self, group: FakeAutoScalingGroup) -> None:
        """ReplaceUnhealthy: the group's InService instances marked Unhealthy go through plain
        Terminating and the terminate hooks, and are replaced. It does not run while
        ReplaceUnhealthy or Terminate is suspended (the instances stay InService, marked
        Unhealthy) and runs as soon as both are resumed; with Launch suspended it terminates
        without replacing."""
        if {"ReplaceUnhealthy", "Terminate"} & suspended(group):
            return
        states = [
            s for s in group.instance_states if s.lifecycle_state == "InService" and s.health_status == "Unhealthy"
        ]
        if states:
            self.begin_terminate(group, states, activity.health_cause())
            self.emu.scaler.reconcile(group)

    def recheck_health(self, group: FakeAutoScalingGroup) -> None:
        """HealthCheck resumed: members gone from ``running`` in EC2 meanwhile are noticed
        again, ``health_check_delay_secs`` from now."""
        if "HealthCheck" in suspended(group):
            return
        gone = [
            s.instance.id
            for s in group.instance_states
            if s.lifecycle_state == "InService"
            and s.health_status == "Healthy"
            and s.instance.state not in ("pending", "running")
        ]
        if gone:
            self.on_ec2_terminated(group.autoscaling_backend, gone)

    def forget_instance(self, instance_id: str) -> None:
        """The instance left its group outside the hook flow (detach)."""
        rec = self.emu.records.get(instance_id)
        if rec is not None:
            self.emu.lifecycle.cancel_actions(rec)
        self.due.pop(instance_id, None)

    # --------------------------------------------------------------------- timer
    def tick(self, now: float) -> None:
        due = sorted((t, i, kind) for i, (t, kind) in self.due.items() if t <= now)
        if not due:
            return
        terminating: dict[int, tuple[Any, list[Any]]] = {}
        leaving: dict[int, tuple[Any, list[Any]]] = {}
        for when, instance_id, kind in due:
            if self.due.get(instance_id) != (when, kind):
                continue  # changed meanwhile
            del self.due[instance_id]
            group, state = self._locate(instance_id)
            if state is None:
                if kind == "proceed":
                    self._terminate_orphan(instance_id)
                continue
            if kind == "unhealthy":
                self._unhealthy(group, state)
            elif kind == "launch" and state.lifecycle_state == "Pending":
                self._after_pending(group, state)
            elif kind == "terminate" and state.lifecycle_state == "Terminating":
                terminating.setdefault(id(group), (group, []))[1].append(state)
            elif kind == "proceed":
                leaving.setdefault(id(group), (group, []))[1].append(state)
        for group, states in terminating.values():
            self._after_terminating(group, states)
        for group, states in leaving.values():
            self.finish_termination(group, states)

    # ------------------------------------------------------------------ plumbing
    def _rec(self, group: FakeAutoScalingGroup, instance_id: str) -> InstanceRecord:
        backend = group.autoscaling_backend
        rec = self.emu.record(instance_id, backend.account_id, backend.region_name)
        rec.group_name = group.name
        return rec

    def _locate(self, instance_id: str) -> tuple[Any, Any]:
        from moto.autoscaling.models import autoscaling_backends

        rec = self.emu.records.get(instance_id)
        if rec is None or rec.group_name is None:
            return None, None
        group = autoscaling_backends[rec.account][rec.region].autoscaling_groups.get(rec.group_name)
        state = find_state(group, instance_id) if group is not None else None
        return group, state

    def _terminate_orphan(self, instance_id: str) -> None:
        from moto.ec2.models import ec2_backends

        rec = self.emu.records.get(instance_id)
        if rec is None:
            return
        ec2 = ec2_backends[rec.account][rec.region]
        instance = ec2.get_instance_by_id(instance_id)
        if instance is not None:
            self.finish_termination(None, [_Bare(instance)], ec2)


def _user_cause() -> str:
    from .util import iso_seconds

    return f"At {iso_seconds()} an instance was taken out of service in response to a user request."


def _float(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


class _Bare:
    """Adapter giving a bare EC2 instance the ``.instance`` attribute of an InstanceState."""

    def __init__(self, instance: Any) -> None:
        self.instance = instance
