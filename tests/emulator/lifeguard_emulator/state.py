"""The emulator's own state, next to moto's models, and the process-wide singleton.

moto is not thread-safe. ``Emulator.lock`` (re-entrant) serialises every Auto Scaling and
EC2 request that reaches moto, every mutation this package makes to those models, and
the background timer. Requests to other services (SQS long polls, S3 uploads, ...) never
take it.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from .config import Config
from .recorder import Recorder

if TYPE_CHECKING:
    from .hooks import LifecycleAction


class InstanceRecord:
    """What the emulator knows about one EC2 instance beyond moto's model."""

    def __init__(self, instance_id: str, account: str, region: str) -> None:
        self.instance_id = instance_id
        self.account = account
        self.region = region
        # Auto Scaling group the instance belongs (or belonged) to.
        self.group_name: str | None = None
        # Launch template id/name/version number, or launch configuration, it came from.
        self.lt_id: str | None = None
        self.lt_name: str | None = None
        self.lt_version: int | None = None
        self.lc_name: str | None = None
        self.launched_mono = time.monotonic()
        # Overrides IMDS autoscaling/target-lifecycle-state: "Terminated" once the group
        # decided to terminate it, "Detached" after DetachInstances.
        self.target_state: str | None = None
        # Active lifecycle actions by hook name.
        self.actions: dict[str, LifecycleAction] = {}
        # IMDS simulation.
        self.spot_action: dict[str, str] | None = None
        self.spot_enforce: tuple[float, str] | None = None
        self.rebalance: dict[str, str] | None = None
        self.maintenance: list[Any] = []
        self.imds_fault: str | None = None
        self.imds_fault_remaining = 0
        self.imds_creds: dict[str, str] | None = None
        self.imds_creds_role: str | None = None
        # moto's Instance object (kept so IMDS lookups do not scan every reservation).
        self.instance: Any = None
        self.imds_creds_expiry = 0.0
        # Instance refresh that launched it (so the refresh does not replace it again).
        self.refresh_id: str | None = None
        # The scaling activities that launch and terminate it (for the EventBridge
        # "EC2 Instance Launch/Terminate ..." events): (activity id, start time, cause).
        self.launch_activity: tuple[str, Any, str] | None = None
        self.terminate_activity: tuple[str, Any, str] | None = None


class Emulator:
    def __init__(self) -> None:
        from .faults import Faults
        from .hooks import LifecycleEngine
        from .images import ImageTracker
        from .phases import Phases
        from .realism import Deliveries, RateLimiter, new_rng
        from .ec2_instances import Stopper
        from .refresh import RefreshEngine
        from .run_command import RunCommands
        from .scaling import Scaler
        from .target_health import TargetHealth

        self.lock = threading.RLock()
        self.config = Config()
        self.recorder = Recorder(self.config)
        self.faults = Faults()
        self.records: dict[str, InstanceRecord] = {}
        # IMDSv2 tokens: token -> (instance id, expiry on the monotonic clock).
        self.imds_tokens: dict[str, tuple[str, float]] = {}
        # Access keys issued through IMDS: access key id -> {"access_key_id", "account",
        # "instance_id", "role_name", "role_id", "sender_id"} (see identity.py).
        self.instance_keys: dict[str, dict[str, str]] = {}
        self.rng = new_rng(None)
        self.deliveries = Deliveries(self)
        self.rate_limiter = RateLimiter()
        self.lifecycle = LifecycleEngine(self)
        self.phases = Phases(self)
        self.images = ImageTracker(self)
        self.refresh = RefreshEngine(self)
        self.scaler = Scaler(self)
        self.stopper = Stopper(self)
        self.run_commands = RunCommands(self)
        self.target_health = TargetHealth(self)
        self.stopping = threading.Event()

    def record(self, instance_id: str, account: str, region: str) -> InstanceRecord:
        rec = self.records.get(instance_id)
        if rec is None:
            rec = InstanceRecord(instance_id, account, region)
            self.records[instance_id] = rec
        return rec

    def reset(self) -> None:
        """Reset moto's backends and everything this package keeps (config included)."""
        from moto.moto_api._internal.models import moto_api_backend

        with self.lock:
            moto_api_backend.reset()
            self.records.clear()
            self.imds_tokens.clear()
            self.instance_keys.clear()
            self.lifecycle.reset()
            self.phases.reset()
            self.deliveries.reset()
            self.rate_limiter.reset()
            self.images.reset()
            self.refresh.reset()
            self.scaler.reset()
            self.stopper.reset()
            self.run_commands.reset()
            self.target_health.reset()
            self.faults.reset()
            self.config.reset()
            self.reseed()
            self.recorder.reset()

    def reseed(self) -> None:
        """Restart the random choices from config ``random_seed``."""
        from .realism import new_rng

        self.rng = new_rng(self.config.random_seed)


_EMULATOR: Emulator | None = None
_CREATE_LOCK = threading.Lock()


def emulator() -> Emulator:
    global _EMULATOR
    with _CREATE_LOCK:
        if _EMULATOR is None:
            _EMULATOR = Emulator()
        return _EMULATOR
