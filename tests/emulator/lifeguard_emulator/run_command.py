"""SSM Run Command invocations that take time and end with an outcome (Systems Manager User
Guide: "Understanding command statuses"; API reference: GetCommandInvocation,
ListCommandInvocations, Command ``ExpiresAfter``).

moto 5.2.5 reports every invocation ``Success`` the moment SendCommand returns. Here each
invocation (one per instance of a command) follows a timeline on the monotonic clock:

* ``ssm_invocation_visible_secs`` after SendCommand: before that GetCommandInvocation
  answers ``InvocationDoesNotExist`` and ListCommandInvocations leaves it out;
* ``Pending`` until the SSM Agent picks it up, ``ssm_pending_secs`` after SendCommand;
* ``InProgress`` for ``ssm_command_secs`` (or the outcome's ``secs``), ResponseCode -1;
* then its outcome: ``Success`` (ResponseCode 0) unless ``POST /_lifeguard/ssm/outcomes``
  set another for commands sent since; ``TimedOut`` / ``ExecutionTimedOut`` (ResponseCode
  137, what the agent reports for a script it killed on Linux) if it would run longer than
  its execution timeout (the ``executionTimeout`` parameter, else 3600 s).

An instance that stops or terminates takes its agent with it, and SSM is not told: an
invocation already running stays ``InProgress`` (User Guide: "if the agent isn't running or
available on the node, the command status remains at In Progress until the agent is
available again, or until the execution timeout limit is reached"), one not yet picked up
becomes ``Delayed`` (picked up when the instance runs again). Both end when the command
expires (``ExpiresAfter`` = SendCommand + ``TimeoutSeconds`` + execution timeout, or
``ssm_expiry_secs``): ``TimedOut`` / ``DeliveryTimedOut``, ResponseCode -1, as SSM ends every
invocation still ``InProgress``, ``Pending`` or ``Delayed`` when its command expires.

Every method expects the caller to hold ``Emulator.lock``.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import time
from typing import TYPE_CHECKING, Any

from .util import iso_millis, utcnow

if TYPE_CHECKING:
    from .state import Emulator

OUTCOME_STATUSES = ("Success", "Failed", "TimedOut")
DEFAULT_CODES = {"Success": 0, "Failed": 1, "TimedOut": 137}
KILLED_CODE = 137  # the agent's exit code for a script it stopped (SIGKILL), Linux
TERMINAL = frozenset({"Success", "Failed", "TimedOut", "Cancelled"})
STDOUT_MAX, STDERR_MAX, PLUGIN_OUTPUT_MAX = 24000, 8000, 2500
DEFAULT_EXECUTION_TIMEOUT = 3600


class Outcome:
    def __init__(self, outcome_id: int, body: dict[str, Any]) -> None:
        known = {"instance_id", "status", "response_code", "stdout", "stderr", "secs", "count"}
        unknown = set(body) - known
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}; known: {sorted(known)}")
        self.id = outcome_id
        self.instance_id = body.get("instance_id")
        if self.instance_id is not None and not isinstance(self.instance_id, str):
            raise ValueError("instance_id must be a string or null")
        self.status = body.get("status", "Success")
        if self.status not in OUTCOME_STATUSES:
            raise ValueError(f"status must be one of {OUTCOME_STATUSES}")
        code = body.get("response_code", DEFAULT_CODES[self.status])
        if isinstance(code, bool) or not isinstance(code, int):
            raise ValueError("response_code must be an int")
        if (self.status == "Success") != (code == 0):
            raise ValueError("response_code is 0 for Success and only for Success")
        self.response_code = code
        self.stdout, self.stderr = body.get("stdout", ""), body.get("stderr", "")
        if not isinstance(self.stdout, str) or not isinstance(self.stderr, str):
            raise ValueError("stdout and stderr must be strings")
        self.secs = body.get("secs")
        if self.secs is not None and (isinstance(self.secs, bool) or not isinstance(self.secs, (int, float)) or self.secs < 0):
            raise ValueError("secs must be null or a number >= 0")
        self.count = body.get("count")
        if self.count is not None and (isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1):
            raise ValueError("count must be null or an int >= 1")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "instance_id": self.instance_id,
            "status": self.status,
            "response_code": self.response_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "secs": self.secs,
            "count_left": self.count,
        }


class Invocation:
    def __init__(self, command: Any, instance_id: str, plan: dict[str, Any], outcome: Outcome | None) -> None:
        self.command_id = command.command_id
        self.instance_id = instance_id
        # The document's steps (GetCommandInvocation's PluginName) and those a Linux instance
        # skips for their platform precondition; the others run and share the outcome.
        self.steps: list[str] = list(plan["steps"])
        self.skipped: frozenset[str] = frozenset(plan["skipped"])
        self.sent = time.monotonic()
        self.sent_wall = utcnow()
        self.visible_at = self.sent + plan["visible_secs"]
        self.deliver_at = self.sent + plan["pending_secs"]
        self.expires_at = self.sent + plan["expiry_secs"]
        self.exec_timeout = float(plan["execution_timeout"])
        self.run_secs = float(outcome.secs if outcome is not None and outcome.secs is not None else plan["run_secs"])
        self.outcome = (
            (outcome.status, outcome.response_code, outcome.stdout, outcome.stderr) if outcome else ("Success", 0, "", "")
        )
        self.status = self.details = "Pending"
        self.response_code = -1
        self.stdout = self.stderr = ""
        self.started: float | None = None
        self.ended: float | None = None
        self.lost = False  # the instance stopped while it ran: no result will come

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def advance(self, now: float) -> None:
        """Take every transition due by ``now``, each at its own time."""
        if self.status == "Pending" and self.deliver_at <= min(now, self.expires_at):
            self._start(self.deliver_at)
        if self.terminal:
            return
        if self.status == "InProgress" and not self.lost and self.started is not None:
            end = self.started + min(self.run_secs, self.exec_timeout)
            if end <= self.expires_at and end <= now:
                if self.run_secs > self.exec_timeout:
                    self._end(end, "TimedOut", "ExecutionTimedOut", KILLED_CODE, "", "")
                else:
                    status, code, out, err = self.outcome
                    details = "ExecutionTimedOut" if status == "TimedOut" else status
                    self._end(end, status, details, code, out, err)
                return
        if self.expires_at <= now:
            self._end(self.expires_at, "TimedOut", "DeliveryTimedOut", -1, "", "")

    def instance_down(self, now: float) -> None:
        self.advance(now)
        if self.status == "Pending":
            self.status = self.details = "Delayed"
        elif self.status == "InProgress":
            self.lost = True

    def instance_up(self, now: float) -> None:
        self.advance(now)
        if self.status == "Delayed":
            self._start(now)

    def _start(self, at: float) -> None:
        self.status = self.details = "InProgress"
        self.started = at

    def _end(self, at: float, status: str, details: str, code: int, stdout: str, stderr: str) -> None:
        self.status, self.details, self.response_code = status, details, code
        self.stdout, self.stderr = stdout, stderr
        self.ended = at

    def wall(self, mono: float | None) -> _dt.datetime | None:
        return None if mono is None else self.sent_wall + _dt.timedelta(seconds=mono - self.sent)

    def elapsed(self, now: float) -> str:
        if self.started is None:
            return ""
        return f"PT{max(0.0, (self.ended if self.ended is not None else now) - self.started):.3f}S"

    def step(self, name: str, now: float) -> dict[str, Any]:
        """The state of one step: the invocation's own, or for a step skipped for its
        platform, ``Success`` as soon as the agent has looked at it."""
        if name in self.skipped and self.started is not None:
            at = self.wall(self.started)
            return {
                "Status": "Success", "StatusDetails": "Success", "ResponseCode": 0, "start": at, "end": at,
                "elapsed": "PT0.000S", "stdout": f"Step execution skipped due to incompatible platform. Step name: {name}",
                "stderr": "",
            }
        ended = self.ended is not None
        return {
            "Status": self.status, "StatusDetails": self.details, "ResponseCode": self.response_code,
            "start": self.wall(self.started), "end": self.wall(self.ended), "elapsed": self.elapsed(now),
            "stdout": self.stdout if ended else "", "stderr": self.stderr if ended else "",
        }


def aggregate(invocations: list[Invocation], max_errors: str) -> dict[str, Any]:
    """A command's Status, StatusDetails and counts from its invocations (User Guide,
    "Understanding command statuses": MaxErrors or more errors make the command fail)."""
    total = len(invocations)
    done = [i for i in invocations if i.terminal]
    errors = sum(1 for i in done if i.status == "Failed" or i.details == "ExecutionTimedOut")
    undelivered = sum(1 for i in done if i.details == "DeliveryTimedOut")
    counts = {"CompletedCount": len(done), "ErrorCount": errors, "DeliveryTimedOutCount": undelivered, "TargetCount": total}
    if len(done) < total:
        started = any(i.status != "Pending" and i.status != "Delayed" for i in invocations)
        state = "InProgress" if started else "Pending"
        return {"Status": state, "StatusDetails": state, **counts}
    limit = _max_errors(max_errors, total)
    if total and errors > limit:
        failed = any(i.status == "Failed" for i in done)
        status, details = ("Failed", "Failed") if failed else ("TimedOut", "ExecutionTimedOut")
    elif total and undelivered > limit:
        status, details = "TimedOut", "DeliveryTimedOut"
    elif errors or undelivered:
        status, details = "Failed", "Incomplete"
    else:
        status, details = "Success", "Success"
    return {"Status": status, "StatusDetails": details, **counts}


def _max_errors(value: str, total: int) -> int:
    text = str(value or "0").strip()
    try:
        if text.endswith("%"):
            return math.floor(total * float(text[:-1]) / 100.0)
        return int(text)
    except ValueError:
        return 0


class RunCommands:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.reset()

    def reset(self) -> None:
        self.outcomes: list[Outcome] = []
        self._ids = itertools.count(1)
        self.by_command: dict[str, list[Invocation]] = {}
        self.active: list[Invocation] = []

    # ------------------------------------------------------------- outcomes
    def add_outcome(self, body: dict[str, Any]) -> dict[str, Any]:
        outcome = Outcome(next(self._ids), body)
        self.outcomes.append(outcome)
        return outcome.to_dict()

    def list_outcomes(self) -> list[dict[str, Any]]:
        return [o.to_dict() for o in self.outcomes]

    def clear_outcomes(self, instance_id: str | None) -> int:
        keep = [o for o in self.outcomes if instance_id is not None and o.instance_id != instance_id]
        cleared = len(self.outcomes) - len(keep)
        self.outcomes = keep
        return cleared

    def _take_outcome(self, instance_id: str) -> Outcome | None:
        """The newest outcome set for this instance, else the newest one for any instance."""
        chosen = next((o for o in reversed(self.outcomes) if o.instance_id == instance_id), None)
        if chosen is None:
            chosen = next((o for o in reversed(self.outcomes) if o.instance_id is None), None)
        if chosen is not None and chosen.count is not None:
            chosen.count -= 1
            if chosen.count <= 0:
                self.outcomes.remove(chosen)
        return chosen

    # ---------------------------------------------------------- invocations
    def track(self, command: Any, plan: dict[str, Any], running: dict[str, bool]) -> None:
        """A new command: one invocation per instance. ``running``: instance id -> whether
        its instance is running now (one that is not gets ``Delayed``)."""
        cfg = self.emu.config
        expiry = cfg.ssm_expiry_secs
        if expiry is None:
            expiry = float(command.timeout_seconds) + float(plan["execution_timeout"])
        plan = dict(
            plan,
            visible_secs=float(cfg.ssm_invocation_visible_secs),
            pending_secs=float(cfg.ssm_pending_secs),
            run_secs=float(cfg.ssm_command_secs),
            expiry_secs=float(expiry),
        )
        command.expires_after = command.requested_date_time + _dt.timedelta(seconds=float(expiry))
        invocations = []
        for instance_id in command.instance_ids:
            invocation = Invocation(command, instance_id, plan, self._take_outcome(instance_id))
            if not running.get(instance_id, False):
                invocation.instance_down(invocation.sent)
            invocations.append(invocation)
        self.by_command[command.command_id] = invocations
        self.active.extend(invocations)

    def invocations(self, command_id: str, now: float | None = None) -> list[Invocation] | None:
        found = self.by_command.get(command_id)
        if found is not None:
            now = time.monotonic() if now is None else now
            for invocation in found:
                invocation.advance(now)
        return found

    def tick(self, now: float) -> None:
        for invocation in self.active:
            invocation.advance(now)
        if any(i.terminal for i in self.active):
            self.active = [i for i in self.active if not i.terminal]

    def instance_down(self, instance_id: str) -> None:
        now = time.monotonic()
        for invocation in self.active:
            if invocation.instance_id == instance_id:
                invocation.instance_down(now)

    def instance_up(self, instance_id: str) -> None:
        now = time.monotonic()
        for invocation in self.active:
            if invocation.instance_id == instance_id:
                invocation.instance_up(now)


def invocation_view(command: Any, invocation: Invocation, step: str, now: float) -> dict[str, Any]:
    """GetCommandInvocation's answer for one step (output only once it has ended)."""
    state = invocation.step(step, now)
    return {
        "CommandId": invocation.command_id,
        "InstanceId": invocation.instance_id,
        "Comment": command.comment,
        "DocumentName": command.document_name,
        "DocumentVersion": getattr(command, "_lg_document_version", None) or "$DEFAULT",
        "PluginName": step,
        "ResponseCode": state["ResponseCode"],
        "ExecutionStartDateTime": _iso(state["start"]),
        "ExecutionElapsedTime": state["elapsed"],
        "ExecutionEndDateTime": _iso(state["end"]),
        "Status": state["Status"],
        "StatusDetails": state["StatusDetails"],
        "StandardOutputContent": state["stdout"][:STDOUT_MAX],
        "StandardOutputUrl": "",
        "StandardErrorContent": state["stderr"][:STDERR_MAX],
        "StandardErrorUrl": "",
        "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False},
    }


def list_view(command: Any, invocation: Invocation, details: bool, now: float) -> dict[str, Any]:
    """One entry of ListCommandInvocations (``CommandPlugins``, one per step, with ``Details``)."""
    entry: dict[str, Any] = {
        "CommandId": invocation.command_id,
        "InstanceId": invocation.instance_id,
        "InstanceName": "",
        "Comment": command.comment,
        "DocumentName": command.document_name,
        "DocumentVersion": getattr(command, "_lg_document_version", None) or "$DEFAULT",
        "RequestedDateTime": command.requested_date_time,
        "Status": invocation.status,
        "StatusDetails": invocation.details,
        "TraceOutput": "",
        "StandardOutputUrl": "",
        "StandardErrorUrl": "",
        "CommandPlugins": [],
        "ServiceRole": command.service_role_arn,
        "NotificationConfig": command.notification_config,
        "CloudWatchOutputConfig": {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False},
    }
    if details:
        entry["CommandPlugins"] = [_plugin(command, invocation, step, now) for step in invocation.steps]
    return entry


def _plugin(command: Any, invocation: Invocation, step: str, now: float) -> dict[str, Any]:
    state = invocation.step(step, now)
    output = state["stdout"]
    if state["stderr"]:
        output += "\n----------ERROR-------\n" + state["stderr"]
    plugin: dict[str, Any] = {
        "Name": step,
        # CommandPluginStatus has no Delayed: a delayed step has not started.
        "Status": "Pending" if state["Status"] == "Delayed" else state["Status"],
        "StatusDetails": state["StatusDetails"],
        "ResponseCode": state["ResponseCode"],
        "Output": output[:PLUGIN_OUTPUT_MAX],
        "StandardOutputUrl": "",
        "StandardErrorUrl": "",
        "OutputS3Region": command.output_s3_region or command.backend_region,
        "OutputS3BucketName": command.output_s3_bucket_name,
        "OutputS3KeyPrefix": command.output_s3_key_prefix,
    }
    if state["start"] is not None:
        plugin["ResponseStartDateTime"] = state["start"]
    if state["end"] is not None:
        plugin["ResponseFinishDateTime"] = state["end"]
    return plugin


def _iso(when: _dt.datetime | None) -> str:
    return iso_millis(when) if when is not None else ""
