"""Desired capacity, launches and scale-in victims, hook-aware.

moto's ``FakeAutoScalingGroup.set_desired_capacity`` counts only ``InService`` instances
and terminates the first N on scale-in. It is replaced (``install``) by ``Scaler.reconcile``:

* capacity counts ``Pending``, ``Pending:Wait``, ``Pending:Proceed`` and ``InService``
  instances; ``Terminating*``, ``Standby`` and detached instances do not count, so a
  replacement is launched while an instance waits in ``Terminating:Wait``;
* launches go through moto's ``replace_autoscaling_group_instances`` and then through
  ``phases`` (plain ``Pending``, launch hooks); scale-in victims go through plain
  ``Terminating`` and the terminate hooks;
* suspended ``Launch`` / ``Terminate`` processes are honoured;
* victims follow the termination policies (see ``select_victims``);
* attached target groups hold the group's running ``InService`` instances, except those that
  went ``InService`` while ``AddToLoadBalancer`` was suspended: as the User Guide says
  ("How suspended processes affect other processes"), resuming the process does not add
  them -- they must be registered by hand -- until they leave ``InService`` (standby,
  termination, detach).

Every method expects the caller to hold ``Emulator.lock``.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import TYPE_CHECKING, Any, Iterator

from . import activity

if TYPE_CHECKING:
    from moto.autoscaling.models import FakeAutoScalingGroup, InstanceState

    from .state import Emulator, InstanceRecord

COUNTED = frozenset({"Pending", "Pending:Wait", "Pending:Proceed", "InService"})
# SuspendProcesses / ResumeProcesses ``ScalingProcesses`` (API reference).
PROCESSES = (
    "Launch",
    "Terminate",
    "AddToLoadBalancer",
    "AlarmNotification",
    "AZRebalance",
    "HealthCheck",
    "InstanceRefresh",
    "ReplaceUnhealthy",
    "ScheduledActions",
)


def suspended(group: FakeAutoScalingGroup) -> set[str]:
    """The group's suspended processes."""
    return {p["ProcessName"] for p in group.suspended_processes}


def target_instances(group: FakeAutoScalingGroup) -> int:
    desired = int(group.desired_capacity or 0)
    policy = group.mixed_instances_policy or {}
    overrides = (policy.get("LaunchTemplate") or {}).get("Overrides") or []
    if overrides:
        weight = str(overrides[0].get("WeightedCapacity") or "1")
        w = int(weight) if weight.isdigit() and int(weight) > 0 else 1
        return math.ceil(desired / w)
    return desired


def group_config(group: FakeAutoScalingGroup) -> tuple[str | None, int | None, str | None]:
    """(launch template id, resolved version number, launch configuration name)."""
    lt = group.ec2_launch_template
    if lt is not None:
        try:
            number = lt.get_version(group.launch_template_version).number
        except Exception:
            number = None
        return lt.id, number, None
    return None, None, getattr(group, "launch_configuration_name", None)


class Scaler:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.reset()

    def reset(self) -> None:
        # (account, region, group) whose launches wait for an image to become available.
        self.blocked: set[tuple[str, str, str]] = set()
        # Instances that went InService while their group's AddToLoadBalancer process was
        # suspended: never registered to its target groups until they leave InService.
        self.not_added: set[str] = set()

    # ------------------------------------------------------------------ capacity
    def reconcile(self, group: FakeAutoScalingGroup) -> None:
        counted = [s for s in group.instance_states if s.lifecycle_state in COUNTED]
        target = target_instances(group)
        delta = target - len(counted)
        held = suspended(group)
        if delta > 0 and "Launch" not in held:
            self.launch(group, delta, activity.launch_cause(len(counted), target))
        elif delta < 0 and "Terminate" not in held:
            candidates = [s for s in counted if not s.protected_from_scale_in]
            victims = self.select_victims(group, candidates, -delta, counted)
            if victims:
                self.emu.phases.begin_terminate(group, victims, activity.scale_in_cause(len(counted), target))
        backend = group.autoscaling_backend
        if group.name in backend.autoscaling_groups:
            backend.update_attached_elbs(group.name)
            backend.update_attached_target_groups(group.name)

    def launch(self, group: FakeAutoScalingGroup, count: int, cause: str = "") -> list[InstanceState]:
        backend = group.autoscaling_backend
        key = (backend.account_id, backend.region_name, group.name)
        override = self.emu.refresh.launch_override(group)
        with _launch_config(group, override):
            try:
                image_id = group.image_id
                lt_id, lt_version, lc_name = group_config(group)
            except Exception as exc:  # e.g. the pinned template version was deleted
                self._block(group, key, cause, f"{exc}. Launching EC2 instance failed.")
                return []
            if not self.emu.images.launchable(backend.ec2_backend, image_id):
                ami = backend.ec2_backend.amis.get(image_id)
                state = getattr(ami, "state", "unknown")
                self._block(group, key, cause, f"The image id '[{image_id}]' is not available (state: {state}). "
                            "Launching EC2 instance failed.")
                return []
            self.blocked.discard(key)
            before = len(group.instance_states)
            group.replace_autoscaling_group_instances(count, group.get_propagated_tags())
            new_states = group.instance_states[before:]
            lt_name = group.ec2_launch_template.name if group.ec2_launch_template else None
        refresh_id = self.emu.refresh.active_id(group)
        for state in new_states:
            rec = self.emu.record(state.instance.id, backend.account_id, backend.region_name)
            rec.group_name = group.name
            rec.lt_id, rec.lt_name, rec.lt_version, rec.lc_name = lt_id, lt_name, lt_version, lc_name
            rec.refresh_id = refresh_id
            rec.instance = state.instance
        if lt_id and lt_version is not None and new_states:
            backend.ec2_backend.create_tags(
                [s.instance.id for s in new_states],
                {"aws:ec2launchtemplate:version": str(lt_version)},
            )
        self.emu.phases.on_launched(group, new_states, cause or activity.launch_cause(0, count))
        return new_states

    def _block(self, group: FakeAutoScalingGroup, key: tuple[str, str, str], cause: str, message: str) -> None:
        """Launches wait (retried on every tick); the failure is reported once per wait."""
        if key not in self.blocked:
            activity.send(activity.LAUNCH, False, group, None, activity.start(cause), message)
        self.blocked.add(key)

    def retry_blocked(self) -> None:
        from moto.autoscaling.models import autoscaling_backends

        for account, region, name in list(self.blocked):
            group = autoscaling_backends[account][region].autoscaling_groups.get(name)
            if group is None:
                self.blocked.discard((account, region, name))
                continue
            self.reconcile(group)

    # -------------------------------------------------------------- victims
    def select_victims(
        self,
        group: FakeAutoScalingGroup,
        candidates: list[InstanceState],
        count: int,
        counted: list[InstanceState],
    ) -> list[InstanceState]:
        """Pick ``count`` instances to terminate.

        First the Availability Zone with the most counted instances (AWS balances zones),
        then within it by the group's termination policies: ``OldestLaunchTemplate`` /
        ``OldestLaunchConfiguration`` (instances not on the group's current template
        version or configuration first, lowest version first), ``OldestInstance``,
        ``NewestInstance``, ``ClosestToNextInstanceHour``; ``Default`` means
        OldestLaunchTemplate then OldestLaunchConfiguration then ClosestToNextInstanceHour.
        Where AWS would pick at random we take the oldest instance. Instances still in
        ``Pending*`` are taken only when not enough ``InService`` ones remain.
        """
        if count <= 0 or not candidates:
            return []
        key = self._sort_key(group)
        per_az: dict[str, list[InstanceState]] = {}
        for state in candidates:
            per_az.setdefault(state.availability_zone or "", []).append(state)
        for states in per_az.values():
            states.sort(key=key)
        az_count: dict[str, int] = {}
        for state in counted:
            az = state.availability_zone or ""
            az_count[az] = az_count.get(az, 0) + 1
        victims: list[InstanceState] = []
        index = {az: 0 for az in per_az}
        while len(victims) < count:
            open_azs = [az for az in per_az if index[az] < len(per_az[az])]
            if not open_azs:
                break
            az = max(open_azs, key=lambda z: (az_count.get(z, 0), _neg(z)))
            victims.append(per_az[az][index[az]])
            index[az] += 1
            az_count[az] = az_count.get(az, 0) - 1
        return victims

    def _sort_key(self, group: FakeAutoScalingGroup) -> Any:
        policies = [p for p in (group.termination_policies or ["Default"])]
        lt_id, lt_version, lc_name = group_config(group)
        records = self.emu.records
        now = time.monotonic()

        def rec_of(state: InstanceState) -> InstanceRecord | None:
            return records.get(state.instance.id)

        def outdated(state: InstanceState) -> tuple[int, int]:
            rec = rec_of(state)
            if rec is None:
                return (0, 0)
            if lt_id is not None:
                same = rec.lt_id == lt_id and rec.lt_version == lt_version
                return (0 if not same else 1, rec.lt_version or 0)
            return (0 if rec.lc_name != lc_name else 1, 0)

        def launched(state: InstanceState) -> float:
            rec = rec_of(state)
            return rec.launched_mono if rec is not None else 0.0

        def to_hour(state: InstanceState) -> float:
            return -((now - launched(state)) % 3600)

        parts: list[Any] = []
        for policy in policies:
            if policy in ("Default", "OldestLaunchTemplate", "OldestLaunchConfiguration"):
                parts.append(outdated)
            if policy in ("Default", "ClosestToNextInstanceHour"):
                parts.append(to_hour)
            if policy == "OldestInstance":
                parts.append(launched)
            if policy == "NewestInstance":
                parts.append(lambda s: -launched(s))

        def sort_key(state: InstanceState) -> tuple[Any, ...]:
            pending = 0 if state.lifecycle_state == "InService" else 1
            return (pending, *(f(state) for f in parts), launched(state))

        return sort_key


def _neg(text: str) -> tuple[int, ...]:
    """Sort helper: prefer alphabetically first zone on ties when used with max()."""
    return tuple(-ord(c) for c in text)


@contextlib.contextmanager
def _launch_config(group: FakeAutoScalingGroup, override: tuple[Any, str] | None) -> Iterator[None]:
    """Temporarily point the group at an instance refresh's desired launch template."""
    if override is None:
        yield
        return
    saved = (group.ec2_launch_template, group.launch_template_version, group.launch_config)
    group.ec2_launch_template, group.launch_template_version = override
    group.launch_config = None
    try:
        yield
    finally:
        group.ec2_launch_template, group.launch_template_version, group.launch_config = saved


# ----------------------------------------------------------------- moto patches
def install() -> None:
    from moto.autoscaling import models as asg_models

    from .state import emulator

    def set_desired_capacity(self: Any, new_capacity: int | None) -> None:
        self.desired_capacity = self.min_size if new_capacity is None else new_capacity
        emulator().scaler.reconcile(self)

    def notify_terminate_instances(self: Any, instance_ids: list[str]) -> None:
        """EC2 TerminateInstances on group members: the health check notices later."""
        emulator().phases.on_ec2_terminated(self, instance_ids)

    def update_attached_target_groups(self: Any, group_name: str) -> None:
        """Targets = the group's running InService instances (AWS registers instances when
        they go InService and deregisters them when they leave it); moto registers every
        member, which fails for an instance already terminated in EC2. Instances that go
        InService while AddToLoadBalancer is suspended are left out (see the module doc)."""
        group = self.autoscaling_groups[group_name]
        if not group.target_group_arns:
            return
        wanted = {
            s.instance.id
            for s in group.instance_states
            if s.lifecycle_state == "InService" and s.instance.state == "running"
        }
        members = {i for i, r in emulator().records.items() if r.group_name == group_name} | {
            s.instance.id for s in group.instance_states
        }
        found = (self.elbv2_backend.target_groups.get(arn) for arn in group.target_group_arns)
        target_groups = [tg for tg in found if tg is not None]
        not_added = emulator().scaler.not_added
        not_added -= members - wanted
        if "AddToLoadBalancer" in suspended(group):
            not_added |= {i for i in wanted if any(i not in tg.targets for tg in target_groups)}
        for tg in target_groups:
            add = [{"Id": i, "Port": tg.port} for i in sorted(wanted - not_added - set(tg.targets))]
            if add:
                tg.register(add)
            stale = sorted((set(tg.targets) & members) - wanted)
            if stale:
                tg.deregister([{"Id": i} for i in stale])

    original_lt = asg_models.InstanceState.launch_template

    def instance_launch_template(self: Any) -> dict[str, Any] | None:
        rec = emulator().records.get(self.instance.id)
        if rec is not None and rec.lt_id:
            return {
                "LaunchTemplateId": rec.lt_id,
                "LaunchTemplateName": rec.lt_name,
                "Version": str(rec.lt_version),
            }
        if rec is not None and rec.lc_name:
            return None
        return original_lt.fget(self)  # type: ignore[union-attr]

    def instance_launch_configuration_name(self: Any) -> str | None:
        rec = emulator().records.get(self.instance.id)
        if rec is not None and (rec.lt_id or rec.lc_name):
            return rec.lc_name
        group = self.auto_scaling_group
        return getattr(group, "launch_configuration_name", None) if group is not None else None

    asg_models.FakeAutoScalingGroup.set_desired_capacity = set_desired_capacity
    asg_models.AutoScalingBackend.notify_terminate_instances = notify_terminate_instances
    asg_models.AutoScalingBackend.update_attached_target_groups = update_attached_target_groups
    asg_models.InstanceState.launch_template = property(instance_launch_template)
    asg_models.InstanceState.launch_configuration_name = property(instance_launch_configuration_name)
