"""Fixes to moto (5.2.5) behaviour that are not Auto Scaling/EC2 specific.

* EventBridge targets without an InputTransformer receive the whole event in AWS's shape
  (``version, id, detail-type, source, account, time, region, resources, detail``).
  moto's default template drops ``account`` and parses jsonpath expressions per event.
* SQS: moto recomputes every queue attribute (three scans of the queue, with a datetime
  computation per message) on each SendMessage and for every message a ReceiveMessage
  looks at, which makes a queue holding a few hundred messages very slow. Same results,
  computed with one clock read per scan and the retention period read directly.
"""

from __future__ import annotations

import copy
import time
from typing import Any


def _now_millis() -> float:
    return time.time() * 1000.0


def patch_event_delivery() -> None:
    from moto.events.utils import EventTemplateParser

    original = EventTemplateParser.parse

    def parse(input_template: str, input_paths_map: dict[str, Any], event: Any) -> dict[str, Any]:
        if input_template or input_paths_map:
            return original(input_template, input_paths_map, event)
        return {
            "version": "0",
            "id": event.get("id"),
            "detail-type": event.get("detail-type"),
            "source": event.get("source"),
            "account": event.get("account"),
            "time": event.get("time"),
            "region": event.get("region"),
            "resources": copy.deepcopy(event.get("resources", [])),
            "detail": copy.deepcopy(event.get("detail", {})),
        }

    EventTemplateParser.parse = staticmethod(parse)  # type: ignore[method-assign]


def patch_sqs_performance() -> None:
    from moto.sqs import models as sqs_models

    Queue = sqs_models.Queue
    Message = sqs_models.Message

    def messages(self: Any) -> list[Any]:
        now = _now_millis()
        return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]

    def delayed(self: Any) -> int:
        now = _now_millis()
        return sum(1 for m in self._messages if now < m.delayed_until)

    def not_visible(self: Any) -> int:
        now = _now_millis()
        return sum(1 for m in self._messages if not now > m.visible_at)

    def visible(self: Any) -> bool:
        return _now_millis() > self.visible_at

    def is_delayed(self: Any) -> bool:
        return _now_millis() < self.delayed_until

    def retention_ok(self: Any, queue_name: str, message: Any) -> bool:
        retention = int(self.get_queue(queue_name).message_retention_period)
        return retention + message.sent_timestamp / 1000 > time.time()

    Queue.messages = property(messages)
    Queue.approximate_number_of_messages_delayed = property(delayed)
    Queue.approximate_number_of_messages_not_visible = property(not_visible)
    Message.visible = property(visible)
    Message.delayed = property(is_delayed)
    sqs_models.SQSBackend.is_message_valid_based_on_retention_period = retention_ok


def install() -> None:
    patch_event_delivery()
    patch_sqs_performance()
