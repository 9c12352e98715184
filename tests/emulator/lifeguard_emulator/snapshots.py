"""EBS snapshots that an image is being made of (EC2 User Guide: "Create an Amazon
EBS-backed AMI", "Amazon EBS snapshot lifecycle"; API reference: DescribeSnapshots).

moto 5.2.5 makes one snapshot per new image (the root device of its BlockDeviceMappings)
and reports every snapshot ``completed`` / ``100%`` from the start. On AWS the snapshots
of ``CreateImage`` and ``CopyImage`` are ``pending`` while the image is, their
``Progress`` rising, and ``completed`` when it is ``available``; a failed image leaves
them in ``error``. ``start`` and ``settle`` give the image's snapshots that life; the
progress is computed on every read from the image's pending window, so it rises
smoothly whatever the timer period.

moto already models the rest as AWS does, and the emulator keeps it: DeregisterImage
leaves the snapshots in place, and DeleteSnapshot of a snapshot that a registered image
(pending, available or failed) still uses fails with ``InvalidSnapshot.InUse``.
"""

from __future__ import annotations

import time
from typing import Any

# Highest progress a snapshot shows while still pending: "100%" only comes with
# "completed", so a client never sees a finished-looking snapshot that is not usable.
MAX_PENDING_PERCENT = 99


def _percent(window: tuple[float, float], now: float) -> int:
    started, due = window
    if due <= started:
        return MAX_PENDING_PERCENT
    share = (now - started) / (due - started)
    return max(0, min(MAX_PENDING_PERCENT, int(share * 100)))


def install() -> None:
    """Make moto's ``Snapshot.progress`` follow the state the emulator gives a snapshot."""
    from moto.ec2.models.elastic_block_store import Snapshot

    def progress(self: Any) -> str:
        if self.status == "completed":
            return "100%"
        window = getattr(self, "_lg_window", None)
        if window is not None:
            return f"{_percent(window, time.monotonic())}%"
        return getattr(self, "_lg_progress", None) or "100%"

    Snapshot.progress = property(progress)  # type: ignore[method-assign,assignment]


def image_snapshots(ec2_backend: Any, image_id: str) -> list[Any]:
    """The snapshots that the image's BlockDeviceMappings name (those DescribeSnapshots knows)."""
    ami = ec2_backend.amis.get(image_id)
    if ami is None:
        return []
    found = []
    for mapping in ami.block_device_mappings:
        snapshot_id = (mapping.get("Ebs") or {}).get("SnapshotId")
        snapshot = ec2_backend.snapshots.get(snapshot_id) if snapshot_id else None
        if snapshot is not None:
            found.append(snapshot)
    return found


def start(snapshots: list[Any], started: float, due: float) -> None:
    """Snapshots being taken for a pending image: ``pending``, progress 0% at ``started``
    rising to 99% at ``due`` (monotonic clock)."""
    for snapshot in snapshots:
        snapshot.status = "pending"
        snapshot._lg_window = (started, due)
        snapshot._lg_progress = None


def settle(snapshots: list[Any], state: str) -> None:
    """End the snapshots: ``completed`` (100%) or ``error`` (progress stays where it was)."""
    now = time.monotonic()
    for snapshot in snapshots:
        window = getattr(snapshot, "_lg_window", None)
        if window is None and snapshot.status != "pending":
            continue
        snapshot._lg_progress = f"{_percent(window, now)}%" if window is not None else "0%"
        snapshot._lg_window = None
        snapshot.status = state
