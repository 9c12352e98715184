"""AMIs that take time to become available (EC2 User Guide, AMI state change events).

``CreateImage``, ``RegisterImage`` and ``CopyImage`` leave the new image ``pending`` for
``ami_pending_secs``; then it becomes ``available`` (or ``failed`` when told so through the
control API) and an ``EC2 AMI State Change`` event goes on the default event bus.
Auto Scaling launches from an image that is not ``available`` are held back (retried on
every tick), as launches from a pending image fail on AWS.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from . import notify
from .util import new_uuid

if TYPE_CHECKING:
    from .state import Emulator


class PendingImage:
    def __init__(self, account: str, region: str, image_id: str, due: float) -> None:
        self.account = account
        self.region = region
        self.image_id = image_id
        self.due = due
        self.request_id = new_uuid()
        self.fail_message: str | None = None


class ImageTracker:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.reset()

    def reset(self) -> None:
        self.pending: dict[str, PendingImage] = {}

    def track_new(self, ec2_backend: Any, image_id: str) -> None:
        """Called (under the lock) right after moto created ``image_id``."""
        ami = ec2_backend.amis.get(image_id)
        if ami is None:
            return
        delay = float(self.emu.config.ami_pending_secs)
        item = PendingImage(ec2_backend.account_id, ec2_backend.region_name, image_id, time.monotonic() + delay)
        ami.state = "pending"
        self.pending[image_id] = item
        if delay <= 0:
            self._finish(item)

    def fail(self, image_id: str, message: str, now: bool = True) -> bool:
        """Make a pending image end ``failed`` (now, or when its pending time is over)."""
        item = self.pending.get(image_id)
        if item is None:
            return False
        item.fail_message = message or "Image creation failed"
        if now:
            self._finish(item)
        return True

    def deregistered(self, ec2_backend: Any, image_id: str) -> None:
        self.pending.pop(image_id, None)
        self._event(ec2_backend.account_id, ec2_backend.region_name, image_id, "deregistered", "", new_uuid())

    def launchable(self, ec2_backend: Any, image_id: str | None) -> bool:
        """False for an image that exists and is not ``available``. Unknown ids are allowed
        (moto does not validate AMIs by default)."""
        if not image_id:
            return True
        ami = ec2_backend.amis.get(image_id)
        return ami is None or ami.state == "available"

    def tick(self, now: float) -> bool:
        """Finish due images; True if any finished (so blocked launches can retry)."""
        due = [item for item in self.pending.values() if item.due <= now]
        for item in due:
            self._finish(item)
        return bool(due)

    def _finish(self, item: PendingImage) -> None:
        from moto.ec2.models import ec2_backends

        self.pending.pop(item.image_id, None)
        backend = ec2_backends[item.account][item.region]
        ami = backend.amis.get(item.image_id)
        if ami is None:
            return
        state = "failed" if item.fail_message else "available"
        ami.state = state
        if item.fail_message:
            ami.state_reason = {"Code": "Client.InternalError", "Message": item.fail_message}
        self._event(item.account, item.region, item.image_id, state, item.fail_message or "", item.request_id)
        if state == "available":
            self.emu.scaler.retry_blocked()

    def _event(self, account: str, region: str, image_id: str, state: str, error: str, request_id: str) -> None:
        notify.put_event(
            account,
            region,
            "aws.ec2",
            "EC2 AMI State Change",
            {"RequestId": request_id, "ImageId": image_id, "State": state, "ErrorMessage": error},
            [f"arn:aws:ec2:{region}::image/{image_id}"],
        )

    def describe(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {
                "image_id": i.image_id,
                "account": i.account,
                "region": i.region,
                "secs_left": round(max(0.0, i.due - now), 3),
                "will_fail": bool(i.fail_message),
            }
            for i in self.pending.values()
        ]
