"""An instance refresh's parameters and progress, and the StartInstanceRefresh rules
(Auto Scaling API reference: StartInstanceRefresh, RefreshPreferences)."""

from __future__ import annotations

from typing import Any

from moto.autoscaling.exceptions import ValidationError

from .util import naive_utc, new_uuid, utcnow

ACTIVE = {"Pending", "InProgress", "Cancelling", "RollbackInProgress"}
EVENT = "EC2 Auto Scaling Instance Refresh "
PROTECTED_MODES = ("Refresh", "Ignore", "Wait")
STANDBY_MODES = ("Terminate", "Ignore", "Wait")
MOVING_VERSIONS = ("$Latest", "$Default")


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
        self.protected_mode = prefs.get("ScaleInProtectedInstances") or "Wait"
        self.standby_mode = prefs.get("StandbyInstances") or "Wait"
        self.waiting_since: float | None = None
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
            "ScaleInProtectedInstances": self.protected_mode,
            "StandbyInstances": self.standby_mode,
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


def validate(group: Any, r: Refresh) -> None:
    """StartInstanceRefresh parameter rules (API reference: StartInstanceRefresh,
    RefreshPreferences)."""
    if not 0 <= r.min_healthy <= 100:
        raise ValidationError("MinHealthyPercentage must be between 0 and 100")
    if not 100 <= r.max_healthy <= 200 or r.max_healthy - r.min_healthy > 100:
        raise ValidationError("MaxHealthyPercentage must be between 100 and 200, at most 100 above MinHealthyPercentage")
    if r.protected_mode not in PROTECTED_MODES:
        raise ValidationError(f"ScaleInProtectedInstances must be one of {', '.join(PROTECTED_MODES)}")
    if r.standby_mode not in STANDBY_MODES:
        raise ValidationError(f"StandbyInstances must be one of {', '.join(STANDBY_MODES)}")
    if r.checkpoints:
        if r.checkpoints != sorted(set(r.checkpoints)) or not 0 < r.checkpoints[0]:
            raise ValidationError("CheckpointPercentages must be ascending values between 1 and 100")
        if r.checkpoints[-1] != 100:
            raise ValidationError("The last value of CheckpointPercentages must be 100.")
    elif "CheckpointDelay" in r.prefs:
        raise ValidationError("CheckpointDelay can only be specified together with CheckpointPercentages.")
    if r.auto_rollback:
        spec = (r.desired or {}).get("LaunchTemplate")
        if not spec:
            raise ValidationError("AutoRollback requires a DesiredConfiguration with a launch template.")
        if (spec.get("Version") or "$Default") in MOVING_VERSIONS:
            raise ValidationError(
                "AutoRollback is not supported when the desired configuration uses the launch template's "
                "$Latest or $Default version. Specify a version number."
            )
        if group.ec2_launch_template is not None and str(group.launch_template_version) in MOVING_VERSIONS:
            raise ValidationError(
                "AutoRollback is not supported when the Auto Scaling group uses the launch template's "
                "$Latest or $Default version. Specify a version number."
            )
