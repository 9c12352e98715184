"""Tell which service and action an incoming AWS request is, and what it asks.

The service and region come from the SigV4 credential scope (``Authorization`` header or
``X-Amz-Credential`` of a presigned URL); the action from ``Action=`` (query protocols),
``X-Amz-Target`` (JSON protocols) or, for S3, from the method, path and query string.
Request bodies of query/JSON protocols are read and put back for moto; S3 bodies are
never read.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote

_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
_ACCESS_KEY = re.compile(r"Credential=([^/,\s]+)/")
_MAX_BODY_RECORDED = 256 * 1024

S3_HEADERS = (
    "content-length",
    "content-type",
    "content-md5",
    "content-encoding",
    "range",
    "x-amz-content-sha256",
    "x-amz-decoded-content-length",
    "x-amz-sdk-checksum-algorithm",
    "x-amz-checksum-algorithm",
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
    "x-amz-checksum-mode",
    "x-amz-trailer",
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-customer-algorithm",
    "x-amz-storage-class",
    "x-amz-copy-source",
    "x-amz-tagging",
    "if-match",
    "if-none-match",
)


class RequestInfo:
    def __init__(self, service: str, region: str | None, action: str, params: Any) -> None:
        self.service = service
        self.region = region
        self.action = action
        self.params = params


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ["wsgi.input"]
    if length > 0:
        body = stream.read(length)
    elif environ.get("wsgi.input_terminated"):
        body = stream.read()
    else:
        body = b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def _flat_form(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key in out:
            prev = out[key]
            out[key] = prev + [value] if isinstance(prev, list) else [prev, value]
        else:
            out[key] = value
    return out


def access_key(environ: dict[str, Any]) -> str | None:
    """The access key id a request was signed with (header or presigned URL)."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    credential = "Credential=" + unquote(_qs_value(environ.get("QUERY_STRING", ""), "X-Amz-Credential"))
    match = _ACCESS_KEY.search(auth) or _ACCESS_KEY.search(credential)
    return match.group(1) if match else None


def route_presigned(environ: dict[str, Any], service: str) -> None:
    """Let moto route a presigned (query-string SigV4) request of a non-S3 service: moto
    reads the service from the ``Authorization`` header only, so one is made from
    ``X-Amz-Credential`` (moto checks no signatures)."""
    if service in ("s3", "moto-api", "unknown") or environ.get("HTTP_AUTHORIZATION"):
        return
    credential = unquote(_qs_value(environ.get("QUERY_STRING", ""), "X-Amz-Credential"))
    if _SCOPE.search("Credential=" + credential):
        environ["HTTP_AUTHORIZATION"] = f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host, Signature=presigned"


def classify(environ: dict[str, Any]) -> RequestInfo:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    query = environ.get("QUERY_STRING", "")
    match = _SCOPE.search(auth) or _SCOPE.search("Credential=" + unquote(_qs_value(query, "X-Amz-Credential")))
    region, service = (match.group(1), match.group(2)) if match else (None, None)
    target = environ.get("HTTP_X_AMZ_TARGET")
    ctype = environ.get("CONTENT_TYPE", "") or ""
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "") or "/"

    if path.startswith("/moto-api"):
        return RequestInfo("moto-api", None, f"{method} {path}", _flat_form(query))
    if service == "s3" or (service is None and not target and not ctype.startswith("application/x-www-form")):
        # moto also treats unsigned requests it cannot place as S3.
        action, params = s3_action(method, path, query, environ)
        return RequestInfo("s3", region, action, params)

    if target:
        body = _read_body(environ)
        action = target.rsplit(".", 1)[-1]
        try:
            params: Any = json.loads(body.decode("utf-8")) if body else {}
        except (UnicodeDecodeError, ValueError):
            params = {"_raw": body[:2000].decode("utf-8", "replace")}
        if len(body) > _MAX_BODY_RECORDED:
            params = {"_truncated_bytes": len(body)}
        return RequestInfo(service or target.split(".", 1)[0].lower(), region, action, params)

    if ctype.startswith("application/x-www-form-urlencoded"):
        body = _read_body(environ)
        params = _flat_form(body.decode("utf-8", "replace"))
    else:
        params = _flat_form(query)
    action = params.get("Action") if isinstance(params.get("Action"), str) else None
    return RequestInfo(service or "unknown", region, action or f"{method} {path}", params)


def _qs_value(query: str, key: str) -> str:
    values = parse_qs(query).get(key)
    return values[0] if values else ""


def s3_action(method: str, path: str, query: str, environ: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Name an S3 REST request like the API operation it is (path-style addressing)."""
    parts = path.lstrip("/").split("/", 1)
    bucket = parts[0] if parts and parts[0] else None
    key = parts[1] if len(parts) > 1 and parts[1] else None
    q = {k: v for k, v in parse_qsl(query, keep_blank_values=True) if not k.startswith("X-Amz-")}
    headers = {}
    for name in S3_HEADERS:
        value = environ.get("HTTP_" + name.upper().replace("-", "_"))
        if name == "content-type":
            value = environ.get("CONTENT_TYPE") or value
        if name == "content-length":
            value = environ.get("CONTENT_LENGTH") or value
        if value:
            headers[name] = value
    params: dict[str, Any] = {"bucket": bucket, "key": key, "query": q, "headers": headers}
    copy = "x-amz-copy-source" in headers
    sub = next((s for s in _SUBRESOURCES if s in q), None)
    if bucket is None:
        return ("ListBuckets" if method == "GET" else f"{method}Service"), params
    if key is None:
        if method == "GET":
            if "uploads" in q:
                return "ListMultipartUploads", params
            if q.get("list-type") == "2":
                return "ListObjectsV2", params
            if "versions" in q:
                return "ListObjectVersions", params
            if sub:
                return "GetBucket" + _SUBRESOURCES[sub], params
            return "ListObjects", params
        if method == "PUT":
            return ("PutBucket" + _SUBRESOURCES[sub]) if sub else "CreateBucket", params
        if method == "DELETE":
            return ("DeleteBucket" + _SUBRESOURCES[sub]) if sub else "DeleteBucket", params
        if method == "HEAD":
            return "HeadBucket", params
        if method == "POST" and "delete" in q:
            return "DeleteObjects", params
        return f"{method}Bucket", params
    if method == "PUT":
        if "partNumber" in q and "uploadId" in q:
            return ("UploadPartCopy" if copy else "UploadPart"), params
        if "tagging" in q:
            return "PutObjectTagging", params
        if "acl" in q:
            return "PutObjectAcl", params
        if "retention" in q:
            return "PutObjectRetention", params
        if "legal-hold" in q:
            return "PutObjectLegalHold", params
        return ("CopyObject" if copy else "PutObject"), params
    if method == "POST":
        if "uploads" in q:
            return "CreateMultipartUpload", params
        if "uploadId" in q:
            return "CompleteMultipartUpload", params
        if "restore" in q:
            return "RestoreObject", params
        return "PostObject", params
    if method == "GET":
        if "uploadId" in q:
            return "ListParts", params
        if "tagging" in q:
            return "GetObjectTagging", params
        if "acl" in q:
            return "GetObjectAcl", params
        if "attributes" in q:
            return "GetObjectAttributes", params
        return "GetObject", params
    if method == "HEAD":
        return "HeadObject", params
    if method == "DELETE":
        if "uploadId" in q:
            return "AbortMultipartUpload", params
        if "tagging" in q:
            return "DeleteObjectTagging", params
        return "DeleteObject", params
    return f"{method}Object", params


_SUBRESOURCES = {
    "versioning": "Versioning",
    "policy": "Policy",
    "lifecycle": "LifecycleConfiguration",
    "encryption": "Encryption",
    "tagging": "Tagging",
    "notification": "NotificationConfiguration",
    "acl": "Acl",
    "cors": "Cors",
    "location": "Location",
    "publicAccessBlock": "PublicAccessBlock",
    "ownershipControls": "OwnershipControls",
    "object-lock": "ObjectLockConfiguration",
    "logging": "Logging",
    "website": "Website",
    "replication": "Replication",
    "accelerate": "AccelerateConfiguration",
    "requestPayment": "RequestPayment",
    "policyStatus": "PolicyStatus",
}


_XML_CODE = re.compile(rb"<Code>([^<]{1,200})</Code>")


def error_code(status: int, headers: list[tuple[str, str]], body: bytes) -> str | None:
    """The AWS error code of an error response (XML ``<Code>``, JSON ``__type`` or header)."""
    if status < 400:
        return None
    for name, value in headers:
        if name.lower() == "x-amzn-errortype" and value:
            return value.split(":", 1)[0].rsplit("#", 1)[-1]
    match = _XML_CODE.search(body[:8192])
    if match:
        return match.group(1).decode("utf-8", "replace")
    try:
        doc = json.loads(body.decode("utf-8"))
        code = doc.get("__type") or doc.get("code") or doc.get("Code")
        if isinstance(code, str):
            return code.rsplit("#", 1)[-1]
    except (UnicodeDecodeError, ValueError, AttributeError):
        pass
    return None
