"""SSM Run Command API on top of moto 5.2.5, with the invocation timeline of run_command.py.

* ``SendCommand`` to an instance id that is not a ``running`` EC2 instance (stopped,
  stopping, terminated, unknown) → HTTP 400 ``InvalidInstanceId`` (SSM API reference,
  SendCommand errors: the node is not running or its SSM Agent is not available); nothing
  is stored. The answer's command is ``Pending`` with zero counts, as SSM's is.
* ``GetCommandInvocation``: the invocation's current state; ``InvocationDoesNotExist``
  during ``ssm_invocation_visible_secs`` after SendCommand; ``InvalidPluginName`` for a step
  the document does not have, or for none when it has several (``AWS-RunPatchBaseline``:
  ``PatchWindows``, ``PatchLinux``, ``PatchMacOS``). Instances are Linux: a step whose
  precondition names another platform is skipped (``Success``, as the agent reports it).
* ``ListCommands`` (moto's filters ``CommandId``, ``InstanceId``): each command's aggregated
  ``Status``/``StatusDetails`` and counts, ``ExpiresAfter`` as SSM computes it.
* ``ListCommandInvocations`` (moto has none): ``CommandId``, ``InstanceId``, ``Details``,
  ``Filters`` (``Status``, ``DocumentName``, ``ExecutionStage``, ``InvokedAfter``,
  ``InvokedBefore``), ``MaxResults``/``NextToken``; newest command first.

Install before ssm_documents.install(), so SendCommand checks the document first.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from typing import Any

from .run_command import DEFAULT_EXECUTION_TIMEOUT, aggregate, invocation_view, list_view
from .state import emulator

RUNNING = "running"
PLATFORM = "Linux"  # every emulated instance's platformType
# Steps of AWS-owned documents moto does not hold (AWS publishes their content): the name
# of each and the platform its precondition requires.
AWS_DOCUMENT_STEPS: dict[str, list[tuple[str, str | None]]] = {
    "AWS-RunShellScript": [("aws:runShellScript", None)],
    "AWS-RunPatchBaseline": [("PatchWindows", "Windows"), ("PatchLinux", "Linux"), ("PatchMacOS", "MacOS")],
}
DEFAULT_STEPS = [("aws:runShellScript", None)]
FILTER_KEYS = ("InvokedAfter", "InvokedBefore", "Status", "ExecutionStage", "DocumentName")
# The SendCommand served in this thread: moto's Command does not keep DocumentVersion.
_SEND = threading.local()


def _error(code: str, message: str) -> Exception:
    from moto.ssm.exceptions import SSMException

    return SSMException(code, message)


def _instance_states(account: str, region: str, instance_ids: list[str]) -> dict[str, str | None]:
    """EC2 state of each instance id (None: no such instance). Caller holds the lock."""
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[account][region]
    states: dict[str, str | None] = {}
    records = emulator().records
    for instance_id in instance_ids:
        rec = records.get(instance_id)
        instance = rec.instance if rec is not None and rec.instance is not None else None
        if instance is None:
            instance = next((i for i in backend.all_instances() if i.id == instance_id), None)
        states[instance_id] = instance.state if instance is not None else None
    return states


def _document(backend: Any, name: str | None, version: str | None) -> Any:
    if not name:
        return None
    if name.startswith("arn:") and "document/" in name:
        name = name.split("document/", 1)[1]
    documents = backend._documents.get(name)
    if documents is None:
        return None
    try:
        if version in (None, "", "$DEFAULT"):
            return documents.get_default_version()
        return documents.find(document_version=version, strict=False)
    except Exception:
        return None


def _steps(name: str | None, content: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The document's steps: (name, the platform its precondition requires, if any)."""
    steps = content.get("mainSteps")
    if isinstance(steps, list) and steps:
        found = []
        for step in steps:
            if not isinstance(step, dict) or not step.get("name"):
                continue
            condition = (step.get("precondition") or {}).get("StringEquals")
            platform = None
            if isinstance(condition, list) and len(condition) == 2 and condition[0] == "platformType":
                platform = str(condition[1])
            found.append((str(step["name"]), platform))
        if found:
            return found
    if isinstance(content.get("runtimeConfig"), dict) and content["runtimeConfig"]:
        return [(str(plugin), None) for plugin in content["runtimeConfig"]]
    return list(AWS_DOCUMENT_STEPS.get(str(name or ""), DEFAULT_STEPS))


def _plan(command: Any, document: Any) -> dict[str, Any]:
    """Steps and execution timeout of a new command (instances are Linux: steps for another
    platform are skipped)."""
    content = getattr(document, "content_json", None) if document is not None else None
    content = content if isinstance(content, dict) else {}
    steps = _steps(command.document_name, content)
    timeout: Any = (command.parameters or {}).get("executionTimeout")
    if isinstance(timeout, list):
        timeout = timeout[0] if timeout else None
    if timeout is None:
        declared = (content.get("parameters") or {}).get("executionTimeout")
        timeout = declared.get("default") if isinstance(declared, dict) else None
    try:
        seconds = int(str(timeout)) if timeout is not None else DEFAULT_EXECUTION_TIMEOUT
    except ValueError:
        seconds = DEFAULT_EXECUTION_TIMEOUT
    return {
        "steps": [step for step, _ in steps],
        "skipped": [step for step, platform in steps if platform not in (None, PLATFORM)],
        "execution_timeout": max(1, seconds),
    }


def _filters(filters: Any) -> list[tuple[str, str]]:
    out = []
    for item in filters or []:
        key, value = item.get("key") or item.get("Key"), item.get("value") or item.get("Value")
        if key not in FILTER_KEYS:
            raise _error("InvalidFilterKey", f"The filter key {key} is not valid.")
        out.append((key, str(value)))
    return out


def _when(text: str) -> _dt.datetime:
    try:
        value = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _error("InvalidFilterValue", f"The filter value {text} is not a valid date.") from None
    return value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)


def _matches(command: Any, invocation: Any, filters: list[tuple[str, str]]) -> bool:
    requested = command.requested_date_time
    requested = requested if requested.tzinfo else requested.replace(tzinfo=_dt.timezone.utc)
    for key, value in filters:
        if key == "Status" and invocation.status != value:
            return False
        if key == "DocumentName" and command.document_name != value:
            return False
        if key == "ExecutionStage" and (value == "Complete") != invocation.terminal:
            return False
        if key == "InvokedAfter" and requested < _when(value):
            return False
        if key == "InvokedBefore" and requested > _when(value):
            return False
    return True


def install() -> None:
    from moto.ssm import models as ssm_models
    from moto.ssm.responses import SimpleSystemManagerResponse

    Command = ssm_models.Command
    original_init = Command.__init__
    original_response_object = Command.response_object
    original_send = SimpleSystemManagerResponse.send_command

    def command_init(self: Any, *args: Any, **kwargs: Any) -> None:
        given = list(kwargs.get("instance_ids") or [])
        original_init(self, *args, **kwargs)
        # moto adds every instance of the region when no Targets are given (an empty EC2
        # filter matches all) and deduplicates through a set; SSM runs the command on the
        # instances named (plus those the Targets match), in the order given.
        found = self.instance_ids if kwargs.get("targets") else []
        self.instance_ids = list(dict.fromkeys(given + found))
        backend = ssm_models.ssm_backends[self.account_id][self.backend_region]
        version = getattr(_SEND, "document_version", None)
        self._lg_document_version = version
        emu = emulator()
        with emu.lock:
            states = _instance_states(self.account_id, self.backend_region, self.instance_ids)
            plan = _plan(self, _document(backend, self.document_name, version))
            emu.run_commands.track(self, plan, {i: s == RUNNING for i, s in states.items()})

    def response_object(self: Any) -> dict[str, Any]:
        result = original_response_object(self)
        emu = emulator()
        with emu.lock:
            invocations = emu.run_commands.invocations(self.command_id)
            if invocations is not None:
                result.update(aggregate(invocations, self.max_errors))
        result["DocumentVersion"] = getattr(self, "_lg_document_version", None) or "$DEFAULT"
        return result

    def get_invocation(self: Any, instance_id: str, plugin_name: str | None) -> dict[str, Any]:
        emu = emulator()
        now = time.monotonic()
        with emu.lock:
            invocations = emu.run_commands.invocations(self.command_id, now) or []
            found = next((i for i in invocations if i.instance_id == instance_id), None)
            if found is None or now < found.visible_at:
                raise _error(
                    "InvocationDoesNotExist",
                    "The command ID and instance ID you specified did not match any invocations.",
                )
            # A document of several steps needs the step named (API reference, PluginName).
            if plugin_name is None and len(found.steps) > 1:
                raise _error("InvalidPluginName", "The plugin name is not valid.")
            step = plugin_name if plugin_name is not None else found.steps[0]
            if step not in found.steps:
                raise _error("InvalidPluginName", "The plugin name is not valid.")
            return invocation_view(self, found, step, now)

    def send_command(self: Any) -> Any:
        ids = self._get_param("InstanceIds", []) or []
        emu = emulator()
        with emu.lock:
            states = _instance_states(self.current_account, self.region, list(ids))
        bad = [i for i in ids if states.get(i) != RUNNING]
        if bad:
            raise _error(
                "InvalidInstanceId",
                f"Instances [[{', '.join(bad)}]] not in a valid state for account {self.current_account}",
            )
        _SEND.document_version = self._get_param("DocumentVersion")
        try:
            return original_send(self)
        finally:
            _SEND.document_version = None

    def list_command_invocations(self: Any) -> Any:
        from moto.core.responses import ActionResult

        command_id = self._get_param("CommandId")
        instance_id = self._get_param("InstanceId")
        details = bool(self._get_param("Details", False))
        filters = _filters(self._get_param("Filters"))
        max_results = int(self._get_param("MaxResults") or 50)
        start = 0
        token = self._get_param("NextToken")
        if token:
            if not str(token).isdigit():
                raise _error("InvalidNextToken", "The specified token is not valid.")
            start = int(token)
        commands = [c for c in self.ssm_backend._commands if not command_id or c.command_id == command_id]
        emu = emulator()
        now = time.monotonic()
        entries = []
        with emu.lock:
            for command in reversed(commands):
                for invocation in emu.run_commands.invocations(command.command_id, now) or []:
                    if now < invocation.visible_at:
                        continue  # not known yet, as right after SendCommand on AWS
                    if instance_id and invocation.instance_id != instance_id:
                        continue
                    if _matches(command, invocation, filters):
                        entries.append(list_view(command, invocation, details, now))
        page = entries[start : start + max_results]
        result: dict[str, Any] = {"CommandInvocations": page}
        if start + max_results < len(entries):
            result["NextToken"] = str(start + max_results)
        return ActionResult(result)

    Command.__init__ = command_init  # type: ignore[method-assign]
    Command.response_object = response_object  # type: ignore[method-assign]
    Command.get_invocation = get_invocation  # type: ignore[method-assign]
    SimpleSystemManagerResponse.send_command = send_command  # type: ignore[method-assign]
    SimpleSystemManagerResponse.list_command_invocations = list_command_invocations  # type: ignore[attr-defined]

