"""Call recorder: every AWS API call and IMDS request the emulator serves, in order."""

from __future__ import annotations

import collections
import itertools
import json
import threading
import time
from typing import TYPE_CHECKING, Any

from .util import iso_millis

if TYPE_CHECKING:
    from .config import Config


class Recorder:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._calls: collections.deque[dict[str, Any]] = collections.deque(
                maxlen=int(self._config.recorder_max_calls)
            )
            self._seq = itertools.count(1)

    def resize(self, max_calls: int) -> None:
        """Keep at most ``max_calls`` calls from now on (the newest are kept)."""
        with self._lock:
            self._calls = collections.deque(self._calls, maxlen=int(max_calls))

    def start(self, service: str, action: str, params: Any, region: str | None) -> dict[str, Any]:
        """Append a call (status still null) and return it for ``finish``."""
        try:
            text = json.dumps(params, default=str, sort_keys=True)
        except (TypeError, ValueError):
            text = str(params)
        call = {
            "seq": 0,
            "time": iso_millis(),
            "service": service,
            "action": action,
            "region": region,
            "params": params,
            "status": None,
            "error_code": None,
            "duration_ms": None,
            "_text": text,
            "_t0": time.monotonic(),
        }
        with self._lock:
            call["seq"] = next(self._seq)
            self._calls.append(call)
        return call

    @staticmethod
    def finish(call: dict[str, Any], status: int, error_code: str | None) -> None:
        if call.get("status") is not None:
            return
        call["error_code"] = error_code
        call["duration_ms"] = round((time.monotonic() - call["_t0"]) * 1000, 3)
        call["status"] = status

    def query(
        self,
        service: str | None = None,
        action: str | None = None,
        instance_id: str | None = None,
        since: int | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        with self._lock:
            calls = list(self._calls)
        out = []
        for call in calls:
            if since is not None and call["seq"] <= since:
                continue
            if service and call["service"] != service:
                continue
            if action and call["action"] != action:
                continue
            if instance_id and instance_id not in call["_text"]:
                continue
            out.append({k: v for k, v in call.items() if not k.startswith("_")})
        if limit is not None and limit >= 0:
            out = out[-limit:] if limit else []
        return out
