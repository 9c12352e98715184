"""SSM Run Command: ``SendCommand`` checks its document and parameters as SSM does.

moto 5.2.5 records any SendCommand, whatever the document name and parameters. SSM refuses
(API reference: SendCommand errors; Systems Manager User Guide: "Data elements and
parameters" of SSM documents):

* ``InvalidDocument`` — no document of that name (own documents: CreateDocument in moto);
* ``InvalidDocumentVersion`` — ``DocumentVersion`` names no version of it;
* ``InvalidParameters`` — a parameter the document does not declare, a declared parameter
  without ``default`` left out, or a value that breaks the declaration: ``type`` (String /
  Integer / Boolean take exactly one value), ``allowedPattern`` (the whole value must match,
  for a StringList every element), ``allowedValues``, ``minChars``/``maxChars``,
  ``minItems``/``maxItems``.

AWS-owned documents: moto has none. ``AWS-RunShellScript`` is checked against its published
definition (below); any other name with an AWS-reserved prefix (``AWS``, ``Amazon``,
``amzn``, any case) that moto does not hold is accepted unchecked, as moto does.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

# AWS-owned Command documents the emulator knows the parameters of (content as AWS
# publishes it, GetDocument --name AWS-RunShellScript; mainSteps/runtimeConfig omitted).
AWS_DOCUMENTS: dict[str, dict[str, Any]] = {
    "AWS-RunShellScript": {
        "commands": {"type": "StringList", "minItems": 1},
        "workingDirectory": {"type": "String", "default": "", "maxChars": 4096},
        "executionTimeout": {
            "type": "String",
            "default": "3600",
            "allowedPattern": "([1-9][0-9]{0,4})|(1[0-6][0-9]{4})|(17[0-1][0-9]{3})|(172[0-7][0-9]{2})|(172800)",
        },
    },
}
AWS_PREFIXES = ("aws", "amazon", "amzn")
_SINGLE_VALUE = ("String", "Integer", "Boolean")


def _error(code: str, message: str) -> Exception:
    from moto.ssm.exceptions import SSMException

    return SSMException(code, message)


def _declared(backend: Any, name: str, version: str | None) -> dict[str, Any] | None:
    """The ``parameters`` section of document ``name`` (None: an AWS-owned document the
    emulator does not know, accepted unchecked)."""
    if name.startswith("arn:") and "document/" in name:
        name = name.split("document/", 1)[1]
    documents = backend._documents.get(name)
    if documents is not None:
        if version in (None, "", "$DEFAULT"):
            doc = documents.get_default_version()
        else:
            doc = documents.find(document_version=version, strict=False)
        if doc is None:
            raise _error("InvalidDocumentVersion", "The document version is not valid or does not exist.")
        params = doc.content_json.get("parameters") if isinstance(doc.content_json, dict) else None
        return params if isinstance(params, dict) else {}
    if name in AWS_DOCUMENTS:
        return AWS_DOCUMENTS[name]  # its versions are not modelled: any is accepted
    if name.lower().startswith(AWS_PREFIXES):
        return None
    raise _error("InvalidDocument", "The specified document does not exist.")


def _fullmatch(pattern: str, value: str) -> bool:
    try:
        return re.fullmatch(pattern, value) is not None
    except re.error as exc:
        print(f"ssm_documents: allowedPattern {pattern!r} is not a Python regex ({exc}); not checked", file=sys.stderr)
        return True


def _check_value(name: str, spec: dict[str, Any], value: str) -> None:
    shown = json.dumps(value)
    pattern = spec.get("allowedPattern")
    if isinstance(pattern, str) and pattern and not _fullmatch(pattern, value):
        raise _error(
            "InvalidParameters",
            f'Parameter "{name}" value {shown} does not match the allowed pattern {pattern}.',
        )
    allowed = spec.get("allowedValues")
    if isinstance(allowed, list) and allowed and value not in [str(a) for a in allowed]:
        raise _error("InvalidParameters", f'Parameter "{name}" value {shown} is not one of the allowed values.')
    min_chars, max_chars = spec.get("minChars"), spec.get("maxChars")
    if min_chars is not None and len(value) < int(min_chars):
        raise _error("InvalidParameters", f'Parameter "{name}" value {shown} is shorter than {min_chars} characters.')
    if max_chars is not None and len(value) > int(max_chars):
        raise _error("InvalidParameters", f'Parameter "{name}" value is longer than {max_chars} characters.')


def validate(declared: dict[str, Any], given: Any) -> None:
    """Raise InvalidParameters unless ``given`` (SendCommand ``Parameters``) fits ``declared``."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise _error("InvalidParameters", "Parameters must be a map of parameter names to lists of values.")
    for name in given:
        if name not in declared:
            raise _error("InvalidParameters", f'Parameter "{name}" is not declared by the document.')
    for name, spec in declared.items():
        spec = spec if isinstance(spec, dict) else {}
        if name not in given:
            if "default" not in spec:
                raise _error("InvalidParameters", f'Parameter "{name}" is required and has no default value.')
            continue
        values = given[name]
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise _error("InvalidParameters", f'Parameter "{name}" must be a list of strings.')
        kind = spec.get("type", "String")
        if kind in _SINGLE_VALUE and len(values) != 1:
            raise _error("InvalidParameters", f'Parameter "{name}" of type {kind} takes exactly one value.')
        if kind == "Integer" and not re.fullmatch(r"-?[0-9]+", values[0]):
            raise _error("InvalidParameters", f'Parameter "{name}" value {json.dumps(values[0])} is not an Integer.')
        if kind == "Boolean" and values[0] not in ("true", "false"):
            raise _error("InvalidParameters", f'Parameter "{name}" value {json.dumps(values[0])} is not a Boolean.')
        if kind == "StringList":
            min_items, max_items = spec.get("minItems"), spec.get("maxItems")
            if min_items is not None and len(values) < int(min_items):
                raise _error("InvalidParameters", f'Parameter "{name}" needs at least {min_items} items.')
            if max_items is not None and len(values) > int(max_items):
                raise _error("InvalidParameters", f'Parameter "{name}" takes at most {max_items} items.')
        if kind in ("String", "StringList", "Integer"):
            for value in values:
                _check_value(name, spec, value)


def install() -> None:
    from moto.ssm.responses import SimpleSystemManagerResponse

    original = SimpleSystemManagerResponse.send_command

    def send_command(self: Any) -> Any:
        name = self._get_param("DocumentName")
        if not name:
            raise _error("ValidationException", "DocumentName is required.")
        declared = _declared(self.ssm_backend, str(name), self._get_param("DocumentVersion"))
        if declared is not None:
            validate(declared, self._get_param("Parameters", {}))
        return original(self)

    SimpleSystemManagerResponse.send_command = send_command  # type: ignore[method-assign]
