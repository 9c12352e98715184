"""Who signed a request: instance-profile credentials handed out through IMDS, the SQS
``SenderId`` they give a message and the STS ``GetCallerIdentity`` answer they get.

SQS Developer Guide ("ReceiveMessage", system attribute ``SenderId``): for an IAM role the
sender id is ``<role id>:<role session name>``; the role session name of instance-profile
credentials is the instance id, so a message sent with an instance's IMDS credentials has
``SenderId = AROA…:i-…``. The role id is the role's unique id (``AROA`` + 17 upper-case
alphanumerics): moto IAM's ``RoleId`` when moto knows the role (so it matches ``GetRole``),
otherwise one derived from the role name (stable across runs).

STS ``GetCallerIdentity`` (STS API reference; IAM User Guide, "IAM identifiers": an assumed
role session is ``arn:aws:sts::<account>:assumed-role/<role name>/<session name>``, its
``UserId`` is ``<role id>:<session name>``) signed with such a key answers ``UserId`` =
the same ``<role id>:<instance id>`` as the SenderId, ``Arn`` =
``arn:aws:sts::<account>:assumed-role/<role name>/<instance id>`` and the instance's account.

Other credentials keep moto's default ``SenderId`` and moto's ``GetCallerIdentity`` (``AIDAIT2UOQQY3AUEKVGXU``, an IAM
user-like id). The emulator accepts every access key (expired IMDS keys included, as
before) and keeps mapping an issued key to its instance until ``reset``.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .state import Emulator

SQS_SEND_ACTIONS = frozenset({"SendMessage", "SendMessageBatch"})
_local = threading.local()


def derived_id(prefix: str, name: str) -> str:
    """``prefix`` + 17 upper-case alphanumerics from a hash of ``name`` (stable across runs)."""
    digest = base64.b32encode(hashlib.sha256(name.encode("utf-8")).digest()).decode("ascii")
    return prefix + digest[:17]


def role_id(account: str, role_name: str) -> str:
    """The unique id of role ``role_name``: moto IAM's when the role exists there."""
    try:
        from moto.iam.models import iam_backends

        return str(iam_backends[account]["global"].get_role(role_name).id)
    except Exception:
        return derived_id("AROA", role_name)


def remember(emu: Emulator, access_key_id: str, account: str, instance_id: str, role_name: str) -> dict[str, str]:
    """Note that ``access_key_id`` was issued through IMDS to ``instance_id`` for ``role_name``."""
    rid = role_id(account, role_name)
    identity = {
        "access_key_id": access_key_id,
        "account": account,
        "instance_id": instance_id,
        "role_name": role_name,
        "role_id": rid,
        "sender_id": f"{rid}:{instance_id}",
    }
    emu.instance_keys[access_key_id] = identity
    return identity


def sender_id(emu: Emulator, access_key_id: str | None) -> str | None:
    """``<role id>:<instance id>`` for an access key issued through IMDS, else None."""
    if not access_key_id:
        return None
    identity = emu.instance_keys.get(access_key_id)
    return identity["sender_id"] if identity else None


class sending_as:
    """Within this block (one request thread), messages SQS stores get ``sender``."""

    def __init__(self, sender: str | None) -> None:
        self.sender = sender

    def __enter__(self) -> None:
        self.previous = getattr(_local, "sender", None)
        _local.sender = self.sender

    def __exit__(self, *exc: Any) -> None:
        _local.sender = self.previous


def patch_sqs_sender_id() -> None:
    """SendMessage / SendMessageBatch (which goes through send_message) set the SenderId
    of the request's signer; messages SQS stores otherwise (SNS, EventBridge, hook
    notifications) keep moto's default."""
    from moto.sqs import models as sqs_models

    original = sqs_models.SQSBackend.send_message

    def send_message(self: Any, *args: Any, **kwargs: Any) -> Any:
        message = original(self, *args, **kwargs)
        sender = getattr(_local, "sender", None)
        if sender:
            message.sender_id = sender
        return message

    sqs_models.SQSBackend.send_message = send_message  # type: ignore[method-assign]


def instance_identity(emu: Emulator, access_key_id: str | None) -> dict[str, str] | None:
    """What :func:`remember` noted for an access key issued through IMDS, else None."""
    if not access_key_id:
        return None
    return emu.instance_keys.get(access_key_id)


class calling_as:
    """Within this block (one request thread), STS ``GetCallerIdentity`` for the access key
    of ``caller`` (an :func:`instance_identity`, or None) answers as that instance's role
    session."""

    def __init__(self, caller: dict[str, str] | None) -> None:
        self.caller = caller

    def __enter__(self) -> None:
        self.previous = getattr(_local, "caller", None)
        _local.caller = self.caller

    def __exit__(self, *exc: Any) -> None:
        _local.caller = self.previous


def assumed_role_arn(caller: dict[str, str], region: str | None) -> str:
    """``arn:<partition>:sts::<account>:assumed-role/<role name>/<instance id>``."""
    from moto.utilities.utils import get_partition

    partition = get_partition(region or "us-east-1")
    return f"arn:{partition}:sts::{caller['account']}:assumed-role/{caller['role_name']}/{caller['instance_id']}"


def patch_sts_caller_identity() -> None:
    """GetCallerIdentity signed with IMDS-issued credentials: the instance's role session
    (UserId = the SQS SenderId); any other key: moto's answer."""
    from moto.sts import models as sts_models

    original = sts_models.STSBackend.get_caller_identity

    def get_caller_identity(self: Any, access_key_id: str, region: str) -> tuple[str, str, str]:
        caller = getattr(_local, "caller", None)
        if caller and caller.get("access_key_id") == access_key_id:
            return caller["sender_id"], assumed_role_arn(caller, region), caller["account"]
        return original(self, access_key_id, region)  # type: ignore[no-any-return]

    sts_models.STSBackend.get_caller_identity = get_caller_identity  # type: ignore[method-assign]


def default_sender_id() -> str:
    from moto.sqs.models import DEFAULT_SENDER_ID

    return str(DEFAULT_SENDER_ID)
