"""Runtime configuration of the emulator, changed through ``POST /_lifeguard/config``."""

from __future__ import annotations

import threading
from typing import Any

# name -> (default, type, minimum). None as a default means "unset".
_FIELDS: dict[str, tuple[Any, type, float | None]] = {
    # Seconds an AMI made by CreateImage/RegisterImage/CopyImage stays "pending".
    "ami_pending_secs": (1.0, float, 0.0),
    # Seconds IMDS reports target-lifecycle-state "Terminated" before the terminate
    # lifecycle action exists (instance shown as "Terminating" meanwhile).
    "imds_terminated_lead_secs": (0.0, float, 0.0),
    # Seconds an instance stays in Terminating:Proceed before it leaves the group and
    # is terminated in EC2.
    "terminate_proceed_delay_secs": (0.5, float, 0.0),
    # How long the IMDS "timeout" fault holds a request before dropping the connection.
    "imds_timeout_hang_secs": (30.0, float, 0.0),
    # Role served under iam/security-credentials/ for instances without an instance
    # profile. null: such instances get 404 there, as on AWS.
    "imds_default_role_name": ("lifeguard-emulator-instance-role", str, None),
    # Lifetime of the temporary credentials served by IMDS.
    "imds_credentials_ttl_secs": (21600.0, float, 60.0),
    # Period of the background timer (lifecycle timeouts, AMIs, instance refresh).
    "tick_secs": (0.1, float, 0.01),
    # Maximum number of calls kept by the recorder (oldest dropped first).
    "recorder_max_calls": (200000, int, 100),
    # Put "AWS API Call via CloudTrail" events on the default bus for successful Auto
    # Scaling and EC2 write calls (AWS does when a CloudTrail trail logs management events).
    "cloudtrail_events": (False, bool, None),
}


class Config:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {k: v[0] for k, v in _FIELDS.items()}

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
            self._values = {k: v[0] for k, v in _FIELDS.items()}

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Validate then apply ``changes``; raises ValueError naming the bad key."""
        parsed: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in _FIELDS:
                raise ValueError(f"unknown config key {key!r}; known: {sorted(_FIELDS)}")
            default, typ, minimum = _FIELDS[key]
            if value is None:
                if typ is str:
                    parsed[key] = None
                    continue
                raise ValueError(f"{key} must not be null")
            try:
                if typ is str:
                    if not isinstance(value, str):
                        raise TypeError
                    converted: Any = value
                elif typ is bool:
                    if not isinstance(value, bool):
                        raise TypeError
                    converted = value
                elif typ is int:
                    if isinstance(value, bool) or float(value) != int(value):
                        raise TypeError
                    converted = int(value)
                else:
                    if isinstance(value, bool):
                        raise TypeError
                    converted = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{key} must be a {typ.__name__}") from None
            if minimum is not None and converted < minimum:
                raise ValueError(f"{key} must be >= {minimum}")
            parsed[key] = converted
        with self._lock:
            self._values.update(parsed)
            return dict(self._values)
