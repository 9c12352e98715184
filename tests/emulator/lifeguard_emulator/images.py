"""AMIs that take time to become available (EC2 User Guide, AMI state change events).

``CreateImage``, ``RegisterImage`` and ``CopyImage`` leave the new image ``pending`` for
``ami_pending_secs`` (the value when the call is made); then it becomes ``available`` (or
``failed`` when told so through the control API) and an ``EC2 AMI State Change`` event goes
on the default event bus. The snapshots ``CreateImage`` and ``CopyImage`` make for the image
follow it (``pending`` with rising progress, then ``completed`` or ``error``; see
snapshots.py); ``RegisterImage`` registers existing snapshots, which stay as they are.
Auto Scaling launches from an image that is not ``available`` are held back (retried on
every tick), as launches from a pending image fail on AWS.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from . import notify, snapshots
from .util import new_uuid

if TYPE_CHECKING:
    from .state import Emulator


class PendingImage:
    def __init__(self, account: str, region: str, image_id: str, started: float, due: float) -> None:
        self.account = account
        self.region = region
        self.image_id = image_id
        self.started = started
        self.due = due
        # Snapshots made for this image (CreateImage, CopyImage), settled with it.
        self.snapshot_ids: list[str] = []
        self.request_id = new_uuid()
        self.fail_message: str | None = None


class ImageTracker:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.reset()

    def reset(self) -> None:
        self.pending: dict[str, PendingImage] = {}

    def track_new(self, ec2_backend: Any, image_id: str, own_snapshots: bool) -> None:
        """Called (under the lock) right after moto created ``image_id``. ``own_snapshots``:
        the call made the image's snapshots (CreateImage, CopyImage), so they are pending too."""
        ami = ec2_backend.amis.get(image_id)
        if ami is None:
            return
        delay = float(self.emu.config.ami_pending_secs)
        started = time.monotonic()
        item = PendingImage(ec2_backend.account_id, ec2_backend.region_name, image_id, started, started + delay)
        ami.state = "pending"
        if own_snapshots:
            taken = snapshots.image_snapshots(ec2_backend, image_id)
            snapshots.start(taken, item.started, item.due)
            item.snapshot_ids = [s.id for s in taken]
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
        """DeregisterImage: a still pending image is dropped; the snapshots being taken for it
        are finished ``completed`` (they stay, as every deregistered image's snapshots do)."""
        item = self.pending.pop(image_id, None)
        if item is not None:
            snapshots.settle(self._snapshots(ec2_backend, item), "completed")
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
        snapshots.settle(self._snapshots(backend, item), "error" if item.fail_message else "completed")
        ami.state = state
        if item.fail_message:
            ami.state_reason = {"Code": "Client.InternalError", "Message": item.fail_message}
        self._event(item.account, item.region, item.image_id, state, item.fail_message or "", item.request_id)
        if state == "available":
            self.emu.scaler.retry_blocked()

    @staticmethod
    def _snapshots(ec2_backend: Any, item: PendingImage) -> list[Any]:
        found = (ec2_backend.snapshots.get(snapshot_id) for snapshot_id in item.snapshot_ids)
        return [snapshot for snapshot in found if snapshot is not None]

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
                "snapshot_ids": list(i.snapshot_ids),
            }
            for i in self.pending.values()
        ]
