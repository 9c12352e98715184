"""Optional "AWS API Call via CloudTrail" events (config ``cloudtrail_events``).

For successful Auto Scaling and EC2 calls that change something (not Describe*/Get*/List*),
an event shaped like CloudTrail's management events goes on the default event bus, so the
controller's CloudTrail-driven triggers (CreateImage, CreateAutoScalingGroup) can be tested.
``requestParameters`` is the request's form decoded into nested objects with lowerCamelCase
keys (``TagSpecification.1.Tags.1.Key`` -> ``tagSpecification: [{tags: [{key}]}]``); this is
close to, not identical with, CloudTrail's per-service rendering.
"""

from __future__ import annotations

import re
from typing import Any

from . import notify
from .util import DEFAULT_ACCOUNT, iso_seconds, new_uuid

READ_ONLY = ("Describe", "Get", "List")
SOURCES = {"ec2": "ec2.amazonaws.com", "autoscaling": "autoscaling.amazonaws.com"}
_SKIP_KEYS = {"Action", "Version"}
_ID_FIELDS = re.compile(rb"<(imageId|instanceId|launchTemplateId|requestId)>([^<]{1,128})</\1>")


def wanted(service: str, action: str | None) -> bool:
    return service in SOURCES and bool(action) and not str(action).startswith(READ_ONLY)


def _lower(key: str) -> str:
    return key[:1].lower() + key[1:] if key else key


def _value(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    if text in ("true", "false"):
        return text == "true"
    if text.isdigit() and len(text) < 12 and not text.startswith("0"):
        return int(text)
    return text


def nest(form: dict[str, Any]) -> dict[str, Any]:
    """Flat query-protocol parameters -> nested objects/lists with lowerCamelCase keys."""
    root: dict[str, Any] = {}
    for flat, raw in form.items():
        if flat in _SKIP_KEYS:
            continue
        parts = [p for p in flat.split(".") if p != "member"]
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt = None if last else parts[i + 1]
            if part.isdigit():
                continue
            key = _lower(part)
            if last:
                node[key] = _value(raw if not isinstance(raw, list) else raw[-1])
                break
            if nxt is not None and nxt.isdigit():
                items = node.setdefault(key, [])
                index = int(nxt) - 1
                while len(items) <= index:
                    items.append({})
                if i + 2 == len(parts):
                    items[index] = _value(raw)
                    break
                node = items[index]
            else:
                node = node.setdefault(key, {})
    return root


def ec2_shape(request: dict[str, Any]) -> dict[str, Any]:
    """EC2's records name the tag specifications as CloudTrail does for EC2's query lists:
    ``tagSpecificationSet: {items: [{resourceType, tags: [{key, value}]}]}``."""
    specs = request.pop("tagSpecification", None)
    if isinstance(specs, list):
        items = []
        for spec in specs:
            if isinstance(spec, dict):
                spec = dict(spec)
                tags = spec.pop("tag", spec.pop("tags", []))
                spec["tags"] = tags if isinstance(tags, list) else []
                items.append(spec)
        request["tagSpecificationSet"] = {"items": items}
    return request


def emit(
    service: str,
    action: str,
    region: str | None,
    params: dict[str, Any],
    response_body: bytes,
    access_key: str | None,
    user_agent: str | None,
) -> None:
    account = DEFAULT_ACCOUNT
    region = region or "us-east-1"
    found = {m.group(1).decode(): m.group(2).decode() for m in _ID_FIELDS.finditer(response_body[:65536])}
    response = None
    if "imageId" in found:
        response = {"requestId": found.get("requestId", new_uuid()), "imageId": found["imageId"]}
    request_id = found.get("requestId") or new_uuid()
    request = nest(params) if isinstance(params, dict) else None
    if service == "ec2" and request is not None:
        request = ec2_shape(request)
    detail = {
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": "AIDAEXAMPLEPRINCIPAL",
            "arn": f"arn:aws:iam::{account}:user/test",
            "accountId": account,
            "accessKeyId": access_key or "",
        },
        "eventTime": iso_seconds(),
        "eventSource": SOURCES[service],
        "eventName": action,
        "awsRegion": region,
        "sourceIPAddress": "127.0.0.1",
        "userAgent": user_agent or "",
        "requestParameters": request,
        "responseElements": response,
        "requestID": request_id,
        "eventID": new_uuid(),
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": account,
        "eventCategory": "Management",
    }
    notify.put_event(account, region, f"aws.{service}", "AWS API Call via CloudTrail", detail, [])
