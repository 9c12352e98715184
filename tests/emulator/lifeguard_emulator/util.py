"""Small helpers shared by the modules: time formats, ids, JSON responses."""

from __future__ import annotations

import datetime as _dt
import json
import secrets
import uuid
from typing import Any

from werkzeug.wrappers import Response

DEFAULT_ACCOUNT = "123456789012"


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def iso_seconds(when: _dt.datetime | None = None) -> str:
    """``2026-01-02T03:04:05Z`` (IMDS, EventBridge ``time``)."""
    return (when or utcnow()).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_millis(when: _dt.datetime | None = None) -> str:
    """``2026-01-02T03:04:05.678Z`` (Auto Scaling notification ``Time``)."""
    when = when or utcnow()
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def naive_utc(when: _dt.datetime) -> _dt.datetime:
    """moto stores naive UTC datetimes; its serializers expect them."""
    return when.astimezone(_dt.timezone.utc).replace(tzinfo=None)


def new_uuid() -> str:
    return str(uuid.uuid4())


def new_token(nbytes: int = 42) -> str:
    return secrets.token_urlsafe(nbytes)


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(payload, indent=None, default=str) + "\n",
        status=status,
        mimetype="application/json",
    )


def text_response(body: str | bytes, status: int = 200, mimetype: str = "text/plain") -> Response:
    return Response(body, status=status, mimetype=mimetype)


def parse_arn(arn: str) -> dict[str, str] | None:
    """Split ``arn:partition:service:region:account:resource``; None if malformed."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        return None
    return {
        "partition": parts[1],
        "service": parts[2],
        "region": parts[3],
        "account": parts[4],
        "resource": parts[5],
    }
