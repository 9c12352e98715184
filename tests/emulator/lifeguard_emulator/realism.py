"""Optional realism switches (all off by default).

* EventBridge delivery (EventBridge User Guide: delivery is at least once, events may
  arrive late, twice or out of order): each delivery of an event to a rule's target can
  be delayed by a uniform random ``0..event_max_delay_secs`` and repeated with
  probability ``event_duplicate_probability``. Delayed deliveries wait on the emulator's
  timer (``Deliveries.tick``), never in a request thread.
* ``autoscaling_rate_limit``: a token bucket over every Auto Scaling API call; a call
  without a token is answered ``400 Throttling`` "Rate exceeded" (Auto Scaling API
  reference, common errors).
* ``random_seed`` makes the random choices reproducible.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import random
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .state import Emulator


class Deliveries:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._heap: list[tuple[float, int, Any, Any, dict[str, Any], bool]] = []
            self._seq = itertools.count()

    def active(self) -> bool:
        cfg = self.emu.config
        return float(cfg.event_max_delay_secs) > 0 or float(cfg.event_duplicate_probability) > 0

    def schedule(self, original: Any, rule: Any, event: dict[str, Any], transform: bool) -> None:
        """Deliver ``event`` to each target of ``rule``: once or twice, now or later."""
        cfg = self.emu.config
        max_delay = float(cfg.event_max_delay_secs)
        duplicate = float(cfg.event_duplicate_probability)
        rng = self.emu.rng
        now = time.monotonic()
        for target in list(rule.targets):
            copies = 2 if duplicate > 0 and rng.random() < duplicate else 1
            for _ in range(copies):
                delay = rng.uniform(0.0, max_delay) if max_delay > 0 else 0.0
                single = copy.copy(rule)
                single.targets = [target]
                item = (now + delay, next(self._seq), original, single, copy.deepcopy(event), transform)
                if delay <= 0:
                    self._deliver(item)
                else:
                    with self._lock:
                        heapq.heappush(self._heap, item)

    def tick(self, now: float) -> None:
        while True:
            with self._lock:
                if not self._heap or self._heap[0][0] > now:
                    return
                item = heapq.heappop(self._heap)
            self._deliver(item)

    def pending(self) -> int:
        with self._lock:
            return len(self._heap)

    @staticmethod
    def _deliver(item: tuple[float, int, Any, Any, dict[str, Any], bool]) -> None:
        _, _, original, rule, event, transform = item
        try:
            original(rule, event, transform)
        except Exception as exc:  # a broken target must not stop the timer
            import sys

            print(f"lifeguard-emulator: delayed event delivery failed: {exc}", file=sys.stderr)


class RateLimiter:
    """Token bucket configured by ``autoscaling_rate_limit``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._spec: dict[str, Any] | None = None
            self._tokens = 0.0
            self._last = time.monotonic()

    def take(self, spec: dict[str, Any] | None) -> bool:
        """True if the call may proceed (a token was taken or there is no limit)."""
        if spec is None:
            return True
        with self._lock:
            now = time.monotonic()
            if spec != self._spec:
                self._spec = dict(spec)
                self._tokens = float(spec["burst"])
                self._last = now
            self._tokens = min(float(spec["burst"]), self._tokens + (now - self._last) * float(spec["per_sec"]))
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


def new_rng(seed: int | None) -> random.Random:
    return random.Random(seed)


def install() -> None:
    """Route moto's per-rule event delivery through ``Deliveries`` when realism is on."""
    from moto.events.models import Rule

    from .state import emulator

    original = Rule.send_to_targets

    def send_to_targets(self: Any, original_event: Any, transform_input: bool = True) -> None:
        deliveries = emulator().deliveries
        if not deliveries.active() or not self.targets:
            return original(self, original_event, transform_input)
        if not self.event_pattern.matches_event(original_event):
            return None
        deliveries.schedule(original, self, original_event, transform_input)
        return None

    Rule.send_to_targets = send_to_targets  # type: ignore[method-assign]
