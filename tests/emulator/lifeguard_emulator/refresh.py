"""Rolling instance refresh (EC2 Auto Scaling User Guide, "Use an instance refresh to
update instances in an Auto Scaling group", checkpoints, cancel, rollback).

A refresh replaces instances in batches. The batch size keeps
``ceil(desired * MinHealthyPercentage / 100)`` instances healthy (at least one instance
per batch). Each victim goes through the terminate lifecycle hooks; replacements launch
(with the desired launch template, if given) as soon as the victims stop counting as
capacity and go through the launch hooks. A batch is over when its victims are gone and
every replacement has been ``InService`` for ``InstanceWarmup`` seconds. Checkpoints
pause for ``CheckpointDelay``. A replacement whose launch is abandoned fails the refresh
(rolled back when ``AutoRollback`` is set). Instances protected from scale in and
instances in ``Standby`` are waited for (``Wait``, the default, up to
``instance_refresh_wait_secs``), skipped (``Ignore``) or replaced anyway
(``Refresh`` / ``Terminate``). Every method expects ``Emulator.lock``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from moto.autoscaling.exceptions import AutoscalingClientError

from . import activity, notify
from .hooks import find_state
from .refresh_model import ACTIVE, EVENT, Refresh, validate
from .scaling import group_config
from .util import utcnow

if TYPE_CHECKING:
    from .state import Emulator

class RefreshEngine:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.reset()

    def reset(self) -> None:
        # (account, region, group) -> refreshes, newest last
        self.by_group: dict[tuple[str, str, str], list[Refresh]] = {}

    # ------------------------------------------------------------------ queries
    def _active(self, account: str, region: str, name: str) -> Refresh | None:
        for r in reversed(self.by_group.get((account, region, name), [])):
            if r.status in ACTIVE:
                return r
        return None

    def _active_for(self, group: Any) -> Refresh | None:
        b = group.autoscaling_backend
        return self._active(b.account_id, b.region_name, group.name)

    def launch_override(self, group: Any) -> tuple[Any, str] | None:
        r = self._active_for(group)
        if r is None or r.rollback or r.status not in ("Pending", "InProgress"):
            return None
        return r.override

    def active_id(self, group: Any) -> str | None:
        r = self._active_for(group)
        return r.id if r is not None else None

    def describe(self, backend: Any, name: str, ids: list[str]) -> list[dict[str, Any]]:
        items = list(reversed(self.by_group.get((backend.account_id, backend.region_name, name), [])))
        return [r.to_dict() for r in items if not ids or r.id in ids]

    def forget_group(self, backend: Any, name: str) -> None:
        self.by_group.pop((backend.account_id, backend.region_name, name), None)

    # ------------------------------------------------------------------ API
    def start(self, backend: Any, group: Any, prefs: dict[str, Any], desired: dict[str, Any]) -> str:
        if self._active_for(group) is not None:
            raise AutoscalingClientError(
                "InstanceRefreshInProgress",
                "An Instance Refresh is already in progress and blocks the execution of this Instance Refresh.",
            )
        r = Refresh(backend, group, prefs, desired)
        validate(group, r)
        spec = (desired or {}).get("LaunchTemplate")
        if spec:
            ec2 = backend.ec2_backend
            lt = ec2.get_launch_template(spec["LaunchTemplateId"]) if spec.get("LaunchTemplateId") else (
                ec2.get_launch_template_by_name(spec.get("LaunchTemplateName"))
            )
            version = spec.get("Version") or "$Default"
            lt.get_version(version)  # raises if it does not exist
            r.override = (lt, version)
        self.by_group.setdefault((r.account, r.region, r.group_name), []).append(r)
        return r.id

    def cancel(self, backend: Any, group: Any, wait: bool) -> str:
        r = self._active_for(group)
        if r is None:
            raise AutoscalingClientError(
                "ActiveInstanceRefreshNotFound",
                f"No in progress or pending Instance Refresh found for Auto Scaling group {group.name}",
            )
        r.status = "Cancelling"
        r.wait_transitioning = wait
        r.remaining = []
        return r.id

    def rollback(self, backend: Any, group: Any) -> str:
        r = self._active_for(group)
        if r is None:
            raise AutoscalingClientError(
                "ActiveInstanceRefreshNotFound",
                f"No in progress or pending Instance Refresh found for Auto Scaling group {group.name}",
            )
        if r.override is None:
            raise AutoscalingClientError(
                "IrreversibleInstanceRefresh",
                "The instance refresh cannot be rolled back: it has no DesiredConfiguration.",
            )
        self._start_rollback(group, r, "Rollback requested by the user.")
        return r.id

    def on_launch_abandoned(self, group: Any, instance_id: str) -> None:
        rec = self.emu.records.get(instance_id)
        r = self._active_for(group)
        if r is None or rec is None or rec.refresh_id != r.id or r.rollback or r.status != "InProgress":
            return
        self._fail(group, r, f"Launching a replacement instance ({instance_id}) failed: its launch lifecycle action was abandoned.")

    def _fail(self, group: Any, r: Refresh, reason: str) -> None:
        if r.auto_rollback and r.override is not None:
            self._event(group, r, "Failed")
            self._start_rollback(group, r, reason)
        else:
            self._finish(group, r, "Failed", reason)

    # ------------------------------------------------------------------ engine
    def tick(self, now: float) -> None:
        from moto.autoscaling.models import autoscaling_backends

        for (account, region, name), items in list(self.by_group.items()):
            r = items[-1] if items else None
            if r is None or r.status not in ACTIVE:
                continue
            group = autoscaling_backends[account][region].autoscaling_groups.get(name)
            if group is None:
                continue
            self._step(group, r, now)

    def _step(self, group: Any, r: Refresh, now: float) -> None:
        if r.status == "Pending":
            r.status = "InProgress"
            r.to_replace = self._victims_at_start(group, r)
            r.remaining = list(r.to_replace)
            self._event(group, r, "Started")
        settled = self._settled(group, r, now)
        if r.status == "Cancelling":
            if settled or not r.wait_transitioning:
                self._finish(group, r, "Cancelled", "Cancelled by the user.")
            return
        if not settled or now < r.wait_until:
            return
        # Drop instances that left the group another way (scale-in, detach, ...).
        r.remaining = [i for i in r.remaining if self._classify(group, r, i) != "skip"]
        pct = r.percentage()
        if r.checkpoints and not r.rollback and pct >= r.checkpoints[0] and pct < 100:
            cp = r.checkpoints.pop(0)
            r.wait_until = now + r.checkpoint_delay
            r.reason = f"Waiting for checkpoint delay ({int(r.checkpoint_delay)} s) after reaching {cp}%."
            self._event(group, r, "Checkpoint Reached", cp)
            return
        if not r.remaining:
            if r.rollback:
                self._finish(group, r, "RollbackSuccessful", "Rollback completed.")
            else:
                self._finish(group, r, "Successful", "")  # no Checkpoint Reached at 100 %
            return
        ready = [i for i in r.remaining if self._classify(group, r, i) == "replace"]
        if not ready:
            self._wait_for_held(group, r, now)
            return
        r.reason = ""
        r.waiting_since = None
        victims = ready[: self._batch_size(group, r)]
        chosen = set(victims)
        r.remaining = [i for i in r.remaining if i not in chosen]
        states = [s for s in (find_state(group, i) for i in victims) if s is not None]
        r.in_flight.update(s.instance.id for s in states)
        self.emu.phases.begin_terminate(group, states, activity.refresh_cause())
        self.emu.scaler.reconcile(group)

    def _wait_for_held(self, group: Any, r: Refresh, now: float) -> None:
        """Only protected / Standby instances (``Wait``) remain to be replaced."""
        if r.waiting_since is None:
            r.waiting_since = now
        limit = float(self.emu.config.instance_refresh_wait_secs)
        held = ", ".join(r.remaining)
        if now - r.waiting_since >= limit:
            self._fail(group, r, f"Timed out after {int(limit)} s waiting for instances protected from scale in "
                                 f"or in Standby to be replaced: {held}.")
        else:
            r.reason = f"Waiting for instances protected from scale in or in Standby: {held}."

    def _batch_size(self, group: Any, r: Refresh) -> int:
        desired = int(group.desired_capacity or 0)
        if r.max_healthy > 100:
            size = math.floor(desired * r.max_healthy / 100) - desired
        else:
            size = desired - math.ceil(desired * r.min_healthy / 100)
        size = max(1, size)
        if r.checkpoints and not r.rollback:
            cap = math.ceil(r.total * r.checkpoints[0] / 100) - r.done()
            size = max(1, min(size, cap))
        return size

    def _settled(self, group: Any, r: Refresh, now: float) -> bool:
        """Victims gone, replacements InService and warmed up."""
        present = {s.instance.id: s for s in group.instance_states}
        r.in_flight = {i for i in r.in_flight if i in present}
        if r.in_flight:
            return False
        backend = group.autoscaling_backend
        if (backend.account_id, backend.region_name, group.name) in self.emu.scaler.blocked:
            return False  # launches wait for an image: do not take more capacity away
        settled = True
        for instance_id, state in present.items():
            if state.lifecycle_state.startswith("Pending"):
                settled = False
                continue
            rec = self.emu.records.get(instance_id)
            if rec is None or rec.refresh_id != r.id or state.lifecycle_state != "InService":
                continue
            since = r.inservice_since.setdefault(instance_id, now)
            if now - since < r.warmup:
                settled = False
        return settled

    def _classify(self, group: Any, r: Refresh, instance_id: str) -> str:
        """"replace" (can be replaced now), "wait" (held by protection or Standby) or
        "skip" (not to be replaced)."""
        state = find_state(group, instance_id)
        if state is None:
            return "skip"
        if state.lifecycle_state == "Standby":
            return {"Terminate": "replace", "Wait": "wait"}.get(r.standby_mode, "skip")
        if state.lifecycle_state != "InService":
            return "skip"
        if state.protected_from_scale_in:
            return {"Refresh": "replace", "Wait": "wait"}.get(r.protected_mode, "skip")
        return "replace"

    def _victims_at_start(self, group: Any, r: Refresh) -> list[str]:
        if r.rollback:
            return [
                s.instance.id
                for s in group.instance_states
                if self._classify(group, r, s.instance.id) != "skip"
                and (rec := self.emu.records.get(s.instance.id)) is not None
                and rec.refresh_id == r.id
            ]
        if r.override is not None:
            lt, version = r.override
            want = (lt.id, lt.get_version(version).number, None)
        else:
            want = group_config(group)
        ids = []
        for s in group.instance_states:
            if self._classify(group, r, s.instance.id) == "skip":
                continue
            if r.skip_matching:
                rec = self.emu.records.get(s.instance.id)
                have = (rec.lt_id, rec.lt_version, rec.lc_name) if rec else (None, None, None)
                if have == want:
                    continue
            ids.append(s.instance.id)
        return ids

    def _start_rollback(self, group: Any, r: Refresh, reason: str) -> None:
        r.rollback = True
        r.status = "RollbackInProgress"
        r.reason = reason
        r.checkpoints = []
        r.wait_until = 0.0
        r.waiting_since = None
        r.to_replace = self._victims_at_start(group, r)
        r.remaining = list(r.to_replace)

    def _finish(self, group: Any, r: Refresh, status: str, reason: str) -> None:
        r.status = status
        r.reason = reason
        r.ended = utcnow()
        r.remaining = []
        if status == "Successful" and r.override is not None:
            lt, version = r.override
            group.launch_config = None
            group.launch_configuration_name = None
            group._set_launch_configuration(None, {"LaunchTemplateId": lt.id, "Version": version}, None)
        names = {"Successful": "Succeeded", "Failed": "Failed", "Cancelled": "Cancelled"}
        if status in names:
            self._event(group, r, names[status])

    def _event(self, group: Any, r: Refresh, what: str, checkpoint: int | None = None) -> None:
        detail: dict[str, Any] = {"InstanceRefreshId": r.id, "AutoScalingGroupName": group.name}
        if checkpoint is not None:
            detail["CheckpointPercentage"] = str(checkpoint)
            detail["CheckpointDelay"] = str(int(r.checkpoint_delay))
        notify.put_event(r.account, r.region, "aws.autoscaling", EVENT + what, detail, [group.arn])
