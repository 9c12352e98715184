"""JSON control API under ``/_lifeguard/`` (see README.md for the contract)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from werkzeug.wrappers import Response

from . import __version__, imds
from .util import json_response

if TYPE_CHECKING:
    from .state import Emulator

PREFIX = "/_lifeguard/"
SPOT_ACTIONS = ("terminate", "stop", "hibernate")
IMDS_FAULTS = ("status500", "garbage", "timeout", "none")


class BadRequest(Exception):
    pass


def _body(environ: dict[str, Any]) -> Any:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise BadRequest("body must be JSON") from None


def _obj(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def handle(emu: Emulator, environ: dict[str, Any]) -> Response:
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "")[len(PREFIX) :].strip("/")
    query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    try:
        return _route(emu, method, path, query, environ)
    except BadRequest as exc:
        return json_response({"error": str(exc)}, 400)
    except ValueError as exc:
        return json_response({"error": str(exc)}, 400)
    except LookupError as exc:
        return json_response({"error": f"not found: {exc}"}, 404)


def _route(emu: Emulator, method: str, path: str, query: dict[str, str], environ: dict[str, Any]) -> Response:
    parts = path.split("/") if path else []
    if path == "health" and method == "GET":
        import moto

        return json_response({"status": "ok", "emulator_version": __version__, "moto_version": moto.__version__})
    if path == "reset" and method == "POST":
        emu.reset()
        return json_response({"reset": True})
    if path == "calls":
        if method == "DELETE":
            emu.recorder.reset()
            return json_response({"cleared": True})
        if method == "GET":
            since = int(query["since"]) if query.get("since") else None
            limit = int(query["limit"]) if query.get("limit") else None
            calls = emu.recorder.query(
                service=query.get("service") or None,
                action=query.get("action") or None,
                instance_id=query.get("instance_id") or None,
                since=since,
                limit=limit,
            )
            return json_response({"calls": calls})
    if path == "config":
        if method == "GET":
            return json_response(emu.config.to_dict())
        if method == "POST":
            changes = _obj(_body(environ))
            updated = emu.config.update(changes)
            if "recorder_max_calls" in changes:
                emu.recorder.resize(updated["recorder_max_calls"])
            if "random_seed" in changes:
                emu.reseed()
            return json_response(updated)
    if path == "faults":
        if method == "GET":
            return json_response({"faults": emu.faults.list()})
        if method == "POST":
            return json_response(emu.faults.add(_obj(_body(environ))))
        if method == "DELETE":
            return json_response({"cleared": emu.faults.clear(query.get("service") or None)})
    if path == "lifecycle-actions" and method == "GET":
        with emu.lock:
            return json_response({"lifecycle_actions": emu.lifecycle.active()})
    if path == "images" and method == "GET":
        with emu.lock:
            return json_response({"pending_images": emu.images.describe()})
    if len(parts) == 3 and parts[0] == "images" and parts[2] == "fail" and method == "POST":
        body = _obj(_body(environ))
        with emu.lock:
            if not emu.images.fail(parts[1], str(body.get("message", "")), now=body.get("when", "now") == "now"):
                raise LookupError(f"pending image {parts[1]}")
        return json_response({"image_id": parts[1], "failed": True})
    if path == "ssm/outcomes":
        with emu.lock:
            if method == "GET":
                return json_response({"outcomes": emu.run_commands.list_outcomes()})
            if method == "POST":
                return json_response(emu.run_commands.add_outcome(_obj(_body(environ))))
            if method == "DELETE":
                return json_response({"cleared": emu.run_commands.clear_outcomes(query.get("instance_id") or None)})
    if path == "target-health":
        with emu.lock:
            if method == "GET":
                return json_response({"forced": emu.target_health.list_forced()})
            if method == "POST":
                return json_response(emu.target_health.force(_obj(_body(environ))))
            if method == "DELETE":
                return json_response({"cleared": emu.target_health.clear_forced(query.get("instance_id") or None)})
    if len(parts) >= 2 and parts[0] == "instances":
        return _instance(emu, method, parts[1], "/".join(parts[2:]), environ)
    return json_response({"error": f"no route {method} {PREFIX}{path}"}, 404)


def _instance(emu: Emulator, method: str, instance_id: str, sub: str, environ: dict[str, Any]) -> Response:
    if sub == "spot-interruption" and method == "POST":
        body = _obj(_body(environ))
        action = body.get("action", "terminate")
        if action not in SPOT_ACTIONS:
            raise BadRequest(f"action must be one of {SPOT_ACTIONS}")
        in_secs = float(body.get("in_secs", 120))
        with emu.lock:
            notice = imds.spot_interruption(emu, instance_id, action, in_secs, bool(body.get("enforce", False)))
        return json_response({"instance_id": instance_id, "spot_instance_action": notice})
    if sub == "spot-interruption" and method == "DELETE":
        with emu.lock:
            rec = _rec(emu, instance_id)
            rec.spot_action = None
            rec.spot_enforce = None
        return json_response({"instance_id": instance_id, "cleared": True})
    if sub == "rebalance" and method == "POST":
        with emu.lock:
            notice = imds.rebalance(emu, instance_id)
        return json_response({"instance_id": instance_id, "rebalance": notice})
    if sub == "rebalance" and method == "DELETE":
        with emu.lock:
            _rec(emu, instance_id).rebalance = None
        return json_response({"instance_id": instance_id, "cleared": True})
    if sub == "maintenance" and method in ("PUT", "POST"):
        body = _body(environ)
        events = body.get("events") if isinstance(body, dict) else body
        if not isinstance(events, list):
            raise BadRequest('body must be a JSON list of events or {"events": [...]}')
        with emu.lock:
            _rec(emu, instance_id).maintenance = events
        return json_response({"instance_id": instance_id, "maintenance": events})
    if sub == "imds-fault" and method == "POST":
        body = _obj(_body(environ))
        mode = body.get("mode", "none")
        if mode not in IMDS_FAULTS:
            raise BadRequest(f"mode must be one of {IMDS_FAULTS}")
        count = int(body.get("count", 1))
        with emu.lock:
            rec = _rec(emu, instance_id)
            rec.imds_fault = None if mode == "none" else mode
            rec.imds_fault_remaining = count if count > 0 else -1
        return json_response({"instance_id": instance_id, "mode": mode, "count": count if count > 0 else None})
    if sub == "" and method == "GET":
        with emu.lock:
            found = imds.find_instance(emu, instance_id)
            if found is None:
                raise LookupError(instance_id)
            inst, account, region = found
            rec = emu.record(instance_id, account, region)
            timed = emu.phases.due.get(instance_id)
            return json_response(
                {
                    "instance_id": instance_id,
                    "account": account,
                    "region": region,
                    "ec2_state": inst.state,
                    "stopping_secs_left": emu.stopper.secs_left(instance_id),
                    "group": rec.group_name,
                    "launch_template": {"id": rec.lt_id, "version": rec.lt_version} if rec.lt_id else None,
                    "target_lifecycle_state": imds.target_lifecycle_state(emu, inst, rec),
                    "lifecycle_actions": sorted(rec.actions),
                    "timed_phase": {"ends": timed[1], "secs_left": round(timed[0] - time.monotonic(), 3)} if timed else None,
                    "spot_instance_action": rec.spot_action,
                    "rebalance": rec.rebalance,
                    "maintenance": rec.maintenance,
                    "imds_fault": rec.imds_fault,
                    "iam_role": imds.role_of(emu, instance_id),
                }
            )
    return json_response({"error": f"no route {method} instances/{instance_id}/{sub}"}, 404)


def _rec(emu: Emulator, instance_id: str) -> Any:
    found = imds.find_instance(emu, instance_id)
    if found is None:
        raise LookupError(instance_id)
    _, account, region = found
    return emu.record(instance_id, account, region)
