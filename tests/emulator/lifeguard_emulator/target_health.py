"""ELBv2 target health over time (Elastic Load Balancing User Guide, "Health checks for
Application Load Balancer target groups" and "Check the health of your targets"; API
reference: DescribeTargetHealth, ``TargetHealth``).

moto answers ``healthy`` for a registered target the moment it is registered. On AWS a
new target is ``initial`` -- reason ``Elb.RegistrationInProgress``, "Target registration
is in progress" -- until it has passed ``HealthyThresholdCount`` consecutive health checks
made ``HealthCheckIntervalSeconds`` apart; then ``healthy``. Here a target registered by
any path (RegisterTargets, an Auto Scaling group registering its instances through
``update_attached_target_groups``, CloudFormation) is ``initial`` for interval x threshold
seconds of its target group's own settings (moto's defaults: 30 s x 5, AWS's for HTTP
target groups; AWS's minimums 5 s x 2 make 10 s), or config ``target_healthy_secs`` when
set, then ``healthy``. Registering a target that is already registered changes nothing (as
on AWS, its health checks go on); one registered again after a deregistration starts over.
AWS reports ``Elb.InitialHealthChecking`` for part of that time; the emulator keeps
``Elb.RegistrationInProgress`` throughout (both are ``initial``).

A test can make an instance fail its health checks: ``POST /_lifeguard/target-health``
``{"instance_id": "i-...", "state": "unhealthy"}`` makes every target group answer that
instance, wherever and whenever it is registered, ``unhealthy`` with reason
``Target.ResponseCodeMismatch``, "Health checks failed with these codes: [503]" (an
Application Load Balancer's answer for an HTTP 503), from then on; ``"state": null`` clears
it. The forced state applies to registered targets only: a target that is not registered
keeps moto's ``unused`` / ``Target.NotRegistered``, and a stopped instance moto's
``unused`` / ``Target.InvalidState``.

Every method expects the caller to hold ``Emulator.lock`` (ELBv2 requests do).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .state import Emulator

FORCED_STATES = ("unhealthy",)
INITIAL = ("initial", "Elb.RegistrationInProgress", "Target registration is in progress")
UNHEALTHY = ("unhealthy", "Target.ResponseCodeMismatch", "Health checks failed with these codes: [503]")


class TargetHealth:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.reset()

    def reset(self) -> None:
        # (target group ARN, target id) -> monotonic time of its registration.
        self.registered: dict[tuple[str, str], float] = {}
        # instance id -> forced state ("unhealthy").
        self.forced: dict[str, str] = {}

    # ------------------------------------------------------------ registration
    def on_registered(self, tg: Any, target_ids: list[str]) -> None:
        now = time.monotonic()
        for target_id in target_ids:
            self.registered[(tg.arn, target_id)] = now

    def healthy_after(self, tg: Any) -> float:
        """Seconds from registration to ``healthy``."""
        configured = self.emu.config.target_healthy_secs
        if configured is not None:
            return float(configured)
        return _number(tg.health_check_interval_seconds, 30.0) * _number(tg.healthy_threshold_count, 5.0)

    def adjust(self, tg: Any, status: Any) -> Any:
        """What DescribeTargetHealth says of a target moto calls ``status``."""
        if status.status != "healthy" or status.instance_id not in tg.targets:
            return status
        forced = self.forced.get(status.instance_id)
        if forced == "unhealthy":
            return _status(status, *UNHEALTHY)
        since = self.registered.get((tg.arn, status.instance_id))
        if since is not None and time.monotonic() - since < self.healthy_after(tg):
            return _status(status, *INITIAL)
        return status

    # ----------------------------------------------------------- control API
    def force(self, body: dict[str, Any]) -> dict[str, Any]:
        known = {"instance_id", "state"}
        unknown = set(body) - known
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}; known: {sorted(known)}")
        instance_id = body.get("instance_id")
        if not isinstance(instance_id, str) or not instance_id:
            raise ValueError("instance_id must be a non-empty string")
        if "state" not in body:
            raise ValueError(f"state must be given: one of {list(FORCED_STATES)} or null")
        state = body["state"]
        if state is None:
            self.forced.pop(instance_id, None)
        elif state in FORCED_STATES:
            self.forced[instance_id] = state
        else:
            raise ValueError(f"state must be one of {list(FORCED_STATES)} or null")
        return {"instance_id": instance_id, "state": state}

    def list_forced(self) -> list[dict[str, str]]:
        return [{"instance_id": i, "state": s} for i, s in sorted(self.forced.items())]

    def clear_forced(self, instance_id: str | None) -> int:
        if instance_id is None:
            cleared = len(self.forced)
            self.forced.clear()
            return cleared
        return 1 if self.forced.pop(instance_id, None) is not None else 0


def _number(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _status(status: Any, state: str, reason: str, description: str) -> Any:
    from moto.elbv2.models import FakeHealthStatus

    return FakeHealthStatus(status.instance_id, status.port, status.health_check_port, state, reason, description)


# ----------------------------------------------------------------- moto patches
def install() -> None:
    from moto.elbv2.models import FakeTargetGroup

    from .state import emulator

    original_register = FakeTargetGroup.register
    original_health_for = FakeTargetGroup.health_for

    def register(self: Any, targets: list[dict[str, Any]]) -> None:
        before = set(self.targets)
        try:
            original_register(self, targets)
        finally:
            # moto stops at the first target that is not running; those before it are in.
            new = [t["Id"] for t in targets if t["Id"] in self.targets and t["Id"] not in before]
            emulator().target_health.on_registered(self, list(dict.fromkeys(new)))

    def health_for(self: Any, target: dict[str, Any], ec2_backend: Any) -> Any:
        return emulator().target_health.adjust(self, original_health_for(self, target, ec2_backend))

    FakeTargetGroup.register = register  # type: ignore[method-assign]
    FakeTargetGroup.health_for = health_for  # type: ignore[method-assign]
