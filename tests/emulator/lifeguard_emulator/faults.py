"""Fault injection for AWS services (``POST /_lifeguard/faults``).

A fault makes requests to one service (optionally one action) fail for ``secs`` seconds
and/or for the next ``count`` requests, so clients must retry:

* ``unavailable``: HTTP 503, code ``ServiceUnavailable``;
* ``throttle``: S3 503 ``SlowDown``, query protocols 400 ``Throttling``, JSON protocols
  400 ``ThrottlingException``;
* ``error500``: HTTP 500, code ``InternalError`` (``InternalFailure`` for JSON);
* ``drop``: the connection is closed without a response;
* ``access_denied``: HTTP 403, code ``AccessDenied`` (query protocols; ``AccessDeniedException``
  for JSON protocols): a permanent failure, as when a role lacks the permission.

``access_key`` limits a fault to requests signed with that access key id, so a test can deny
one program (an agent with its own credentials) what another (the controller) may do;
``instance_id`` limits it to requests signed with the credentials that instance's IMDS handed
out (its role's session), which is how an agent on the instance signs.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from typing import Any

from werkzeug.wrappers import Response

from .util import new_uuid

MODES = ("unavailable", "throttle", "error500", "drop", "access_denied")
JSON_SERVICES = {"sqs", "events", "ssm", "logs", "dynamodb", "kms", "secretsmanager", "ecs", "monitoring"}
EC2_STYLE = {"ec2"}


class Fault:
    def __init__(self, fid: int, spec: dict[str, Any]) -> None:
        self.id = fid
        self.service = str(spec["service"])
        self.mode = str(spec.get("mode", "unavailable"))
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.action = spec.get("action")
        self.access_key = spec.get("access_key")
        self.instance_id = spec.get("instance_id")
        secs = spec.get("secs")
        count = spec.get("count")
        if secs is None and count is None:
            raise ValueError("give secs and/or count")
        self.until = time.monotonic() + float(secs) if secs is not None else None
        self.remaining = int(count) if count is not None else None
        self.hits = 0

    def live(self, now: float) -> bool:
        if self.until is not None and now >= self.until:
            return False
        return self.remaining is None or self.remaining > 0

    def to_dict(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "id": self.id,
            "service": self.service,
            "action": self.action,
            "access_key": self.access_key,
            "instance_id": self.instance_id,
            "mode": self.mode,
            "secs_left": None if self.until is None else round(max(0.0, self.until - now), 3),
            "count_left": self.remaining,
            "hits": self.hits,
        }


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._faults: list[Fault] = []
            self._ids = itertools.count(1)

    def add(self, spec: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(spec, dict) or "service" not in spec:
            raise ValueError('body must be {"service": ..., "mode": ..., "secs": ... | "count": ...}')
        with self._lock:
            fault = Fault(next(self._ids), spec)
            self._faults.append(fault)
            return fault.to_dict()

    def clear(self, service: str | None = None) -> int:
        now = time.monotonic()
        with self._lock:
            self._faults = [f for f in self._faults if f.live(now)]
            before = len(self._faults)
            self._faults = [f for f in self._faults if service and f.service != service]
            return before - len(self._faults)

    def list(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            self._faults = [f for f in self._faults if f.live(now)]
            return [f.to_dict() for f in self._faults]

    def match(
        self, service: str, action: str | None, access_key: str | None = None, sender: str | None = None
    ) -> Fault | None:
        if not self._faults:
            return None
        now = time.monotonic()
        with self._lock:
            for fault in self._faults:
                if fault.service != service or not fault.live(now):
                    continue
                if fault.action and fault.action != action:
                    continue
                if fault.access_key and fault.access_key != access_key:
                    continue
                if fault.instance_id and not (sender or "").endswith(":" + fault.instance_id):
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                fault.hits += 1
                return fault
        return None


def drop_connection(environ: dict[str, Any]) -> None:
    """Close the client connection and make werkzeug treat it as dropped."""
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    raise ConnectionResetError("connection dropped by lifeguard emulator fault injection")


def fault_response(fault: Fault, service: str, method: str) -> tuple[Response, str]:
    """The error response for ``fault`` in ``service``'s protocol; returns (response, code)."""
    mode = fault.mode
    json_proto = service in JSON_SERVICES
    if mode == "unavailable":
        status, code = 503, "ServiceUnavailable"
    elif mode == "throttle":
        if service == "s3":
            status, code = 503, "SlowDown"
        elif json_proto:
            status, code = 400, "ThrottlingException"
        elif service in EC2_STYLE:
            status, code = 503, "RequestLimitExceeded"
        else:
            status, code = 400, "Throttling"
    elif mode == "access_denied":
        status, code = (400, "AccessDeniedException") if json_proto else (403, "AccessDenied")
    else:
        status, code = 500, ("InternalFailure" if json_proto else "InternalError")
    message = f"Injected fault ({mode}) for {service}"
    return error_response(service, status, code, message, method), code


def error_response(service: str, status: int, code: str, message: str, method: str = "POST") -> Response:
    """An AWS error answer in ``service``'s protocol."""
    json_proto = service in JSON_SERVICES
    request_id = new_uuid()
    headers = {"x-amzn-RequestId": request_id, "x-amz-request-id": request_id}
    if json_proto:
        headers["x-amzn-ErrorType"] = code
        body = json.dumps({"__type": code, "message": message})
        mimetype = "application/x-amz-json-1.0"
    elif service == "s3":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>{request_id}</RequestId></Error>"
        )
        mimetype = "application/xml"
    elif service in EC2_STYLE:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        )
        mimetype = "text/xml"
    else:
        body = (
            f'<ErrorResponse><Error><Type>{"Sender" if status < 500 else "Receiver"}</Type>'
            f"<Code>{code}</Code><Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        mimetype = "text/xml"
    if method == "HEAD":
        body = ""
    return Response(body, status=status, headers=headers, mimetype=mimetype)
