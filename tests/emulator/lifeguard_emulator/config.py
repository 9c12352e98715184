"""Runtime configuration of the emulator, changed through ``POST /_lifeguard/config``.

Defaults are AWS's own behaviour (see README.md, "Config"); tests shorten things
explicitly.
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple


class Field(NamedTuple):
    default: Any
    kind: str  # "float", "int", "bool", "str" or "rate"
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False


_FIELDS: dict[str, Field] = {
    # Seconds an AMI made by CreateImage/RegisterImage/CopyImage stays "pending".
    "ami_pending_secs": Field(1.0, "float", 0.0),
    # Load balancer deregistration delay before the terminate hooks run. null: per group,
    # the largest deregistration_delay.timeout_seconds of its target groups (and
    # connection-draining timeout of its classic load balancers), 0 without any.
    "deregistration_delay_secs": Field(None, "float", 0.0, 3600.0, nullable=True),
    # Seconds the terminate scaling activity spends in plain "Terminating" on its own.
    "terminating_activity_secs": Field(1.0, "float", 0.0),
    # Seconds a new instance of a group with a launch hook stays in plain "Pending".
    "launch_pending_secs": Field(2.0, "float", 0.0),
    # Lowest HeartbeatTimeout PutLifecycleHook accepts (AWS: 30).
    "min_heartbeat_timeout_secs": Field(30, "int", 1.0, 7200.0),
    # Seconds before the group's EC2 health check notices an instance terminated in EC2.
    "health_check_delay_secs": Field(10.0, "float", 0.0),
    # Seconds a newly registered ELBv2 target stays "initial" before "healthy". null: per
    # target group, HealthCheckIntervalSeconds x HealthyThresholdCount (target_health.py).
    "target_healthy_secs": Field(None, "float", 0.0, nullable=True),
    # Seconds an instance stays in Terminating:Proceed before it leaves the group and
    # is terminated in EC2.
    "terminate_proceed_delay_secs": Field(0.5, "float", 0.0),
    # How long an instance refresh waits for protected/Standby instances ("Wait").
    "instance_refresh_wait_secs": Field(3600.0, "float", 0.0),
    # EventBridge delivery realism: probability that a delivery to a target is repeated,
    # and the largest random delay of a delivery.
    "event_duplicate_probability": Field(0.0, "float", 0.0, 1.0),
    "event_max_delay_secs": Field(0.0, "float", 0.0, 3600.0),
    # Seed of the emulator's random choices (null: not reproducible).
    "random_seed": Field(None, "int", nullable=True),
    # Token bucket over every Auto Scaling API call: {"per_sec": float, "burst": int}.
    "autoscaling_rate_limit": Field(None, "rate", nullable=True),
    # How long the IMDS "timeout" fault holds a request before dropping the connection.
    "imds_timeout_hang_secs": Field(30.0, "float", 0.0),
    # Role served under iam/security-credentials/ for instances without an instance
    # profile. null: such instances get 404 there, as on AWS.
    "imds_default_role_name": Field("lifeguard-emulator-instance-role", "str", nullable=True),
    # Lifetime of the temporary credentials served by IMDS.
    "imds_credentials_ttl_secs": Field(21600.0, "float", 60.0),
    # Period of the background timer (lifecycle timeouts, AMIs, instance refresh).
    "tick_secs": Field(0.1, "float", 0.01),
    # Maximum number of calls kept by the recorder (oldest dropped first).
    "recorder_max_calls": Field(200000, "int", 100.0),
    # SSM Run Command (run_command.py): seconds after SendCommand until the SSM Agent picks an
    # invocation up (Pending -> InProgress), seconds it then runs before its outcome, and
    # seconds during which GetCommandInvocation does not know it yet (InvocationDoesNotExist).
    "ssm_pending_secs": Field(1.0, "float", 0.0),
    "ssm_command_secs": Field(2.0, "float", 0.0),
    "ssm_invocation_visible_secs": Field(0.5, "float", 0.0),
    # Seconds after SendCommand at which unfinished invocations end TimedOut (DeliveryTimedOut).
    # null: as SSM computes ExpiresAfter, TimeoutSeconds + the execution timeout.
    "ssm_expiry_secs": Field(None, "float", 0.0, nullable=True),
    # Seconds a stopped EC2 instance spends in "stopping" before "stopped" (ec2_instances.py).
    "instance_stopping_secs": Field(5.0, "float", 0.0),
    # Put "AWS API Call via CloudTrail" events on the default bus for successful Auto
    # Scaling and EC2 write calls (AWS does when a CloudTrail trail logs management events).
    "cloudtrail_events": Field(False, "bool"),
}


def _number(key: str, value: Any, kind: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a {kind}")
    if kind == "int":
        if float(value) != int(value):
            raise ValueError(f"{key} must be an int")
        return int(value)
    return float(value)


def _rate(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) - {"per_sec", "burst"} or "per_sec" not in value:
        raise ValueError(f'{key} must be null or {{"per_sec": number, "burst": int}}')
    per_sec = _number(key + ".per_sec", value["per_sec"], "float")
    burst = _number(key + ".burst", value.get("burst", 1), "int")
    if per_sec < 0 or burst < 1:
        raise ValueError(f"{key} needs per_sec >= 0 and burst >= 1")
    return {"per_sec": per_sec, "burst": burst}


def _parse(key: str, value: Any) -> Any:
    spec = _FIELDS[key]
    if value is None:
        if spec.nullable:
            return None
        raise ValueError(f"{key} must not be null")
    if spec.kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
        return value
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be a bool")
        return value
    if spec.kind == "rate":
        return _rate(key, value)
    converted = _number(key, value, spec.kind)
    if spec.minimum is not None and converted < spec.minimum:
        raise ValueError(f"{key} must be >= {spec.minimum}")
    if spec.maximum is not None and converted > spec.maximum:
        raise ValueError(f"{key} must be <= {spec.maximum}")
    return converted


class Config:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {k: v.default for k, v in _FIELDS.items()}

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(name)

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._values)

    def reset(self) -> None:
        with self._lock:
            self._values = {k: v.default for k, v in _FIELDS.items()}

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Validate then apply ``changes``; raises ValueError naming the bad key."""
        parsed: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in _FIELDS:
                raise ValueError(f"unknown config key {key!r}; known: {sorted(_FIELDS)}")
            parsed[key] = _parse(key, value)
        with self._lock:
            self._values.update(parsed)
            return dict(self._values)
