"""Rolling instance refresh (EC2 Auto Scaling User Guide, "Use an instance refresh to
update instances in an Auto Scaling group", checkpoints, cancel, rollback).

A refresh replaces instances in batches. The batch size keeps
``ceil(desired * MinHealthyPercentage / 100)`` instances healthy (at least one instance
per batch). Each victim goes through the terminate lifecycle hooks; replacements launch
(with the desired launch template, if given) as soon as the victims stop counting as
capacity and go through the launch hooks. A batch is over when its victims are gone and
every replacement has been ``InService`` for ``InstanceWarmup`` seconds. Checkpoints
pause for ``CheckpointDelay``. A replacement whose launch is abandoned fails the refresh
(rolled back when ``AutoRollback`` is set). Every method expects ``Emulator.lock``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from moto.autoscaling.exceptions import AutoscalingClientError, ValidationError

from . import notify
from .hooks import find_state
from .scaling import group_config
from .util import naive_utc, new_uuid, utcnow

if TYPE_CHECKING:
    from .state import Emulator

ACTIVE = {"Pending", "InProgress", "Cancelling", "RollbackInProgress"}
EVENT = "EC2 Auto Scaling Instance Refresh "


class Refresh:
    def __init__(self, backend: Any, group: Any, prefs: dict[str, Any], desired: dict[str, Any]) -> None:
        self.id = new_uuid()
        self.account = backend.account_id
        self.region = backend.region_name
        self.group_name = group.name
        self.status = "Pending"
        self.reason = ""
        self.started = utcnow()
        self.ended: Any = None
        self.prefs = dict(prefs)
        self.desired = desired
        self.min_healthy = int(prefs.get("MinHealthyPercentage", 90))
        self.max_healthy = int(prefs.get("MaxHealthyPercentage", 100))
        self.warmup = float(prefs.get("InstanceWarmup") or 0)
        self.checkpoints = [int(p) for p in prefs.get("CheckpointPercentages") or []]
        self.checkpoint_delay = float(prefs.get("CheckpointDelay", 3600))
        self.skip_matching = bool(prefs.get("SkipMatching", False))
        self.auto_rollback = bool(prefs.get("AutoRollback", False))
        self.override: tuple[Any, str] | None = None
        self.to_replace: list[str] = []
        self.remaining: list[str] = []
        self.in_flight: set[str] = set()
        self.inservice_since: dict[str, float] = {}
        self.wait_until = 0.0
        self.wait_transitioning = True
        self.rollback = False

    @property
    def total(self) -> int:
        return len(self.to_replace)

    def done(self) -> int:
        return self.total - len(self.remaining) - len(self.in_flight)

    def percentage(self) -> int:
        return 100 if self.total == 0 else int(100 * self.done() / self.total)

    def to_dict(self) -> dict[str, Any]:
        prefs = {
            "MinHealthyPercentage": self.min_healthy,
            "MaxHealthyPercentage": self.max_healthy,
            "SkipMatching": self.skip_matching,
            "AutoRollback": self.auto_rollback,
            "ScaleInProtectedInstances": self.prefs.get("ScaleInProtectedInstances", "Ignore"),
            "StandbyInstances": self.prefs.get("StandbyInstances", "Ignore"),
        }
        for key in ("InstanceWarmup", "CheckpointPercentages", "CheckpointDelay"):
            if key in self.prefs:
                prefs[key] = self.prefs[key]
        pct, left = self.percentage(), self.total - self.done()
        out: dict[str, Any] = {
            "InstanceRefreshId": self.id,
            "AutoScalingGroupName": self.group_name,
            "Status": self.status,
            "StatusReason": self.reason or None,
            "StartTime": naive_utc(self.started),
            "EndTime": naive_utc(self.ended) if self.ended else None,
            "PercentageComplete": pct,
            "InstancesToUpdate": left,
            "ProgressDetails": {"LivePoolProgress": {"PercentageComplete": pct, "InstancesToUpdate": left}},
            "Preferences": prefs,
            "Strategy": "Rolling",
        }
        if self.desired:
            out["DesiredConfiguration"] = self.desired
        return out


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
        if not 0 <= r.min_healthy <= 100:
            raise ValidationError("MinHealthyPercentage must be between 0 and 100")
        if not 100 <= r.max_healthy <= 200 or r.max_healthy - r.min_healthy > 100:
            raise ValidationError("MaxHealthyPercentage must be between 100 and 200, at most 100 above MinHealthyPercentage")
        if r.checkpoints and (r.checkpoints != sorted(r.checkpoints) or not 0 < r.checkpoints[-1] <= 100):
            raise ValidationError("CheckpointPercentages must be ascending values between 1 and 100")
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
        reason = f"Launching a replacement instance ({instance_id}) failed: its launch lifecycle action was abandoned."
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
        r.remaining = [i for i in r.remaining if self._eligible(group, i)]
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
                if r.checkpoints:
                    self._event(group, r, "Checkpoint Reached", r.checkpoints.pop(0))
                self._finish(group, r, "Successful", "")
            return
        r.reason = ""
        batch = self._batch_size(group, r)
        victims = r.remaining[:batch]
        r.remaining = r.remaining[batch:]
        states = [s for s in (find_state(group, i) for i in victims) if s is not None]
        r.in_flight.update(s.instance.id for s in states)
        self.emu.lifecycle.begin_terminate(group, states)
        self.emu.scaler.reconcile(group)

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

    def _eligible(self, group: Any, instance_id: str) -> bool:
        state = find_state(group, instance_id)
        if state is None or state.lifecycle_state != "InService":
            return False
        return not state.protected_from_scale_in

    def _victims_at_start(self, group: Any, r: Refresh) -> list[str]:
        if r.rollback:
            return [
                s.instance.id
                for s in group.instance_states
                if self._eligible(group, s.instance.id)
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
            if not self._eligible(group, s.instance.id):
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
