"""Instance metadata service (IMDSv2) per simulated instance, under ``/_imds/{instance_id}``.

EC2 User Guide: "Use the Instance Metadata Service to access instance metadata"
(IMDSv2 tokens), "Instance metadata categories", "Spot Instance interruption notices",
"EC2 instance rebalance recommendations", "Auto Scaling target lifecycle state".
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import string
import time
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Response

from . import identity
from .hooks import find_state
from .util import DEFAULT_ACCOUNT, iso_seconds, new_token, text_response, utcnow

if TYPE_CHECKING:
    from .state import Emulator, InstanceRecord

TOKEN_HEADER = "HTTP_X_AWS_EC2_METADATA_TOKEN"
TTL_HEADER = "HTTP_X_AWS_EC2_METADATA_TOKEN_TTL_SECONDS"
MAX_TTL = 21600


def find_instance(emu: Emulator, instance_id: str) -> tuple[Any, str, str] | None:
    """(moto Instance, account, region) for ``instance_id`` in any loaded EC2 backend."""
    from moto.ec2.models import ec2_backends

    rec = emu.records.get(instance_id)
    if rec is not None and rec.instance is not None:
        return rec.instance, rec.account, rec.region
    if rec is not None:
        inst = ec2_backends[rec.account][rec.region].get_instance_by_id(instance_id)
        if inst is not None:
            rec.instance = inst
            return inst, rec.account, rec.region
    for account, region, backend in list(ec2_backends.iter_backends()):
        inst = backend.get_instance_by_id(instance_id)
        if inst is not None:
            emu.record(instance_id, account, region).instance = inst
            return inst, account, region
    return None


def _plain(status: int, body: str = "") -> Response:
    return text_response(body, status=status)


def handle(emu: Emulator, environ: dict[str, Any], instance_id: str, path: str) -> Response:
    method = environ.get("REQUEST_METHOD", "GET")
    with emu.lock:
        found = find_instance(emu, instance_id)
        if found is None:
            return _plain(404, "Not Found")
        instance, account, region = found
        rec = emu.record(instance_id, account, region)
        if path == "/latest/api/token":
            if method != "PUT":
                return _plain(405, "Method Not Allowed")
            return _token(emu, environ, instance_id)
        if method not in ("GET", "HEAD"):
            return _plain(405, "Method Not Allowed")
        token = environ.get(TOKEN_HEADER)
        known = emu.imds_tokens.get(token) if token else None
        if known is None or known[0] != instance_id or known[1] <= time.monotonic():
            return _plain(401, "Unauthorized")
        if path == "/latest/dynamic/instance-identity/document":
            return text_response(json.dumps(_identity(instance, account, region), indent=2))
        if path == "/latest/user-data":
            data = _user_data(instance)
            return _plain(404, "Not Found") if data is None else Response(data, mimetype="application/octet-stream")
        if path in ("/latest", "/latest/"):
            return text_response("dynamic\nmeta-data\nuser-data")
        if path == "/latest/meta-data":
            path = "/latest/meta-data/"
        if not path.startswith("/latest/meta-data/"):
            return _plain(404, "Not Found")
        node: Any = _tree(emu, instance, rec, account, region)
        parts = [p for p in path[len("/latest/meta-data/") :].split("/") if p]
        for part in parts:
            if not isinstance(node, dict) or part not in node:
                return _plain(404, "Not Found")
            node = node[part]
        if isinstance(node, dict):
            names = sorted(k + "/" if isinstance(v, dict) else k for k, v in node.items())
            return text_response("\n".join(names))
        if path.endswith("/"):
            return _plain(404, "Not Found")
        return text_response(node() if callable(node) else str(node))


def _token(emu: Emulator, environ: dict[str, Any], instance_id: str) -> Response:
    if environ.get("HTTP_X_FORWARDED_FOR"):
        return _plain(403, "Forbidden")
    raw = environ.get(TTL_HEADER)
    try:
        ttl = int(str(raw).strip()) if raw is not None else 0
    except ValueError:
        ttl = 0
    if not 1 <= ttl <= MAX_TTL:
        return _plain(400, "Bad Request")
    token = new_token(40)
    now = time.monotonic()
    emu.imds_tokens[token] = (instance_id, now + ttl)
    if len(emu.imds_tokens) > 10000:
        for key, (_, expiry) in list(emu.imds_tokens.items()):
            if expiry <= now:
                del emu.imds_tokens[key]
    resp = text_response(token)
    resp.headers["X-aws-ec2-metadata-token-ttl-seconds"] = str(ttl)
    return resp


def target_lifecycle_state(emu: Emulator, instance: Any, rec: InstanceRecord) -> str | None:
    """What ``autoscaling/target-lifecycle-state`` says; None when not in a group."""
    if rec.target_state == "Terminated":
        return "Terminated"
    group = getattr(instance, "autoscaling_group", None)
    state = find_state(group, instance.id) if group is not None else None
    if state is not None:
        lifecycle = state.lifecycle_state
        if lifecycle.startswith("Terminating"):
            return "Terminated"
        if lifecycle in ("Standby", "EnteringStandby"):
            return "Standby"
        if lifecycle.startswith("Detach"):
            return "Detached"
        return "InService"
    if rec.target_state == "Detached":
        return "Detached"
    if instance.state == "terminated" and rec.group_name:
        return "Terminated"
    return None


def _tree(emu: Emulator, instance: Any, rec: InstanceRecord, account: str, region: str) -> dict[str, Any]:
    private_ip = instance.private_ip or "10.0.0.10"
    hostname = f"ip-{private_ip.replace('.', '-')}.{'ec2.internal' if region == 'us-east-1' else region + '.compute.internal'}"
    tree: dict[str, Any] = {
        "ami-id": instance.image_id,
        "ami-launch-index": str(getattr(instance, "ami_launch_index", 0)),
        "hostname": hostname,
        "instance-id": instance.id,
        "instance-type": instance.instance_type,
        "instance-life-cycle": "spot" if instance.lifecycle == "spot" else "on-demand",
        "local-hostname": hostname,
        "local-ipv4": private_ip,
        "placement": {
            "availability-zone": instance.placement.zone or f"{region}a",
            "region": region,
        },
        "security-groups": "\n".join(sg.name for sg in instance.security_groups) or "default",
        "events": {"maintenance": {"scheduled": json.dumps(rec.maintenance), "history": "[]"}},
    }
    if instance.public_ip:
        tree["public-ipv4"] = instance.public_ip
    target = target_lifecycle_state(emu, instance, rec)
    if target is not None:
        tree["autoscaling"] = {"target-lifecycle-state": target}
    if rec.spot_action is not None:
        spot = {"instance-action": json.dumps(rec.spot_action)}
        if rec.spot_action.get("action") == "terminate":
            spot["termination-time"] = rec.spot_action["time"]
        tree["spot"] = spot
    if rec.rebalance is not None:
        tree["events"]["recommendations"] = {"rebalance": json.dumps(rec.rebalance)}
    profile_name, profile, role = _iam_profile(emu, instance, rec, account)
    if role:
        if profile is not None:
            profile_arn, profile_id = str(profile.arn), str(profile.id)
        else:
            # No instance profile moto's IAM knows: one named like the role (AWS always has
            # a profile here; its id is stable per name).
            name = profile_name or role
            profile_arn = f"arn:aws:iam::{account}:instance-profile/{name}"
            profile_id = identity.derived_id("AIPA", "instance-profile/" + name)
        tree["iam"] = {
            "info": json.dumps(
                {
                    "Code": "Success",
                    "LastUpdated": iso_seconds(),
                    "InstanceProfileArn": profile_arn,
                    "InstanceProfileId": profile_id,
                },
                indent=2,
            ),
            "security-credentials": {role: lambda: json.dumps(_credentials(emu, rec, role), indent=2)},
        }
    return tree


def _iam_profile(emu: Emulator, instance: Any, rec: InstanceRecord, account: str) -> tuple[str | None, Any, str | None]:
    """(instance profile name, moto's InstanceProfile or None, role name) of an instance.

    The role is the first role of the instance profile of RunInstances ``IamInstanceProfile``
    or of the launch template, when moto's IAM knows the profile; else the profile name;
    else config ``imds_default_role_name`` (None: no role).
    """
    profile = instance.iam_instance_profile
    if not profile and rec.lt_id:
        try:
            from moto.ec2.models import ec2_backends

            lt = ec2_backends[rec.account][rec.region].get_launch_template(rec.lt_id)
            profile = lt.get_version(rec.lt_version).data.get("IamInstanceProfile")
        except Exception:
            profile = None
    name = None
    if isinstance(profile, dict):
        name = profile.get("Name") or (profile.get("Arn") or "").rsplit("/", 1)[-1] or None
    elif isinstance(profile, str):
        name = profile.rsplit("/", 1)[-1]
    if name:
        try:
            from moto.iam.models import iam_backends

            ip = iam_backends[account]["global"].get_instance_profile(name)
        except Exception:
            return name, None, name
        return name, ip, (ip.roles[0].name if ip.roles else name)
    return None, None, emu.config.imds_default_role_name


def role_of(emu: Emulator, instance_id: str) -> dict[str, Any] | None:
    """{"role_name", "role_id", "sender_id", "instance_profile_name", "access_key_ids"} of an
    instance (None without a role); ``access_key_ids`` are the keys IMDS has issued to it."""
    found = find_instance(emu, instance_id)
    if found is None:
        raise LookupError(instance_id)
    instance, account, region = found
    rec = emu.record(instance_id, account, region)
    profile_name, profile, role = _iam_profile(emu, instance, rec, account)
    if not role:
        return None
    rid = identity.role_id(account, role)
    keys = [k for k, v in emu.instance_keys.items() if v["instance_id"] == instance_id]
    return {
        "role_name": role,
        "role_id": rid,
        "sender_id": f"{rid}:{instance_id}",
        "instance_profile_name": profile.name if profile is not None else (profile_name or role),
        "access_key_ids": keys,
    }


def _credentials(emu: Emulator, rec: InstanceRecord, role: str) -> dict[str, str]:
    now = time.monotonic()
    if rec.imds_creds is None or rec.imds_creds_expiry - now < 300 or rec.imds_creds_role != role:
        ttl = float(emu.config.imds_credentials_ttl_secs)
        alphabet = string.ascii_uppercase + string.digits
        wall = utcnow()
        rec.imds_creds = {
            "Code": "Success",
            "LastUpdated": iso_seconds(wall),
            "Type": "AWS-HMAC",
            "AccessKeyId": "ASIA" + "".join(secrets.choice(alphabet) for _ in range(16)),
            "SecretAccessKey": secrets.token_urlsafe(30)[:40],
            "Token": base64.b64encode(secrets.token_bytes(180)).decode(),
            "Expiration": iso_seconds(wall + dt.timedelta(seconds=ttl)),
        }
        rec.imds_creds_expiry = now + ttl
        rec.imds_creds_role = role
        # Remembered so that SQS can give messages signed with it SenderId <role id>:<instance id>.
        identity.remember(emu, rec.imds_creds["AccessKeyId"], rec.account, rec.instance_id, role)
    return rec.imds_creds


def _identity(instance: Any, account: str, region: str) -> dict[str, Any]:
    return {
        "accountId": account or DEFAULT_ACCOUNT,
        "architecture": getattr(instance, "architecture", "x86_64") or "x86_64",
        "availabilityZone": instance.placement.zone or f"{region}a",
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
        "imageId": instance.image_id,
        "instanceId": instance.id,
        "instanceType": instance.instance_type,
        "kernelId": None,
        "pendingTime": iso_seconds(instance.launch_time.replace(tzinfo=dt.timezone.utc)),
        "privateIp": instance.private_ip,
        "ramdiskId": None,
        "region": region,
        "version": "2017-09-30",
    }


def _user_data(instance: Any) -> bytes | None:
    data = instance.user_data
    if not data:
        return None
    if isinstance(data, list):
        data = data[0]
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    try:
        return base64.b64decode(str(data))
    except ValueError:
        return str(data).encode()


# ------------------------------------------------------------------- triggers
def spot_interruption(emu: Emulator, instance_id: str, action: str, in_secs: float, enforce: bool) -> dict[str, Any]:
    from . import notify

    found = find_instance(emu, instance_id)
    if found is None:
        raise LookupError(instance_id)
    instance, account, region = found
    rec = emu.record(instance_id, account, region)
    when = utcnow() + dt.timedelta(seconds=in_secs)
    rec.spot_action = {"action": action, "time": iso_seconds(when)}
    rec.spot_enforce = (time.monotonic() + in_secs, action) if enforce else None
    notify.put_event(
        account, region, "aws.ec2", "EC2 Spot Instance Interruption Warning",
        {"instance-id": instance_id, "instance-action": action},
        [f"arn:aws:ec2:{region}:{account}:instance/{instance_id}"],
    )
    return rec.spot_action


def rebalance(emu: Emulator, instance_id: str) -> dict[str, Any]:
    from . import notify

    found = find_instance(emu, instance_id)
    if found is None:
        raise LookupError(instance_id)
    instance, account, region = found
    rec = emu.record(instance_id, account, region)
    rec.rebalance = {"noticeTime": iso_seconds()}
    notify.put_event(
        account, region, "aws.ec2", "EC2 Instance Rebalance Recommendation",
        {"instance-id": instance_id},
        [f"arn:aws:ec2:{region}:{account}:instance/{instance_id}"],
    )
    return rec.rebalance


def enforce_spot(emu: Emulator, now: float) -> None:
    """Interrupt instances whose spot notice was given with ``enforce`` and is due."""
    from moto.autoscaling.models import autoscaling_backends
    from moto.ec2.models import ec2_backends

    for rec in list(emu.records.values()):
        if rec.spot_enforce is None or rec.spot_enforce[0] > now:
            continue
        action = rec.spot_enforce[1]
        rec.spot_enforce = None
        ec2 = ec2_backends[rec.account][rec.region]
        try:
            if action == "terminate":
                ec2.terminate_instances([rec.instance_id])
            else:
                ec2.stop_instances([rec.instance_id])
            # A group member that is not running fails the group's EC2 health check.
            emu.phases.on_ec2_terminated(autoscaling_backends[rec.account][rec.region], [rec.instance_id])
        except Exception:
            pass
