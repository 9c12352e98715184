"""EC2 instance states and RunInstances idempotency as EC2 has them (EC2 User Guide:
"Amazon EC2 instance state changes", "Stop and start Amazon EC2 instances"; API reference:
StopInstances, StartInstances, RunInstances ``ClientToken``, "Ensure idempotency in Amazon
EC2 API requests").

* moto 5.2.5 stops an instance at once. Here a stopped instance is ``stopping`` (code 64)
  for ``instance_stopping_secs`` (read at the call), then ``stopped`` (80), with moto's
  ``StateReason`` ``Client.UserInitiatedShutdown`` from the start. Stopping it again changes
  nothing; ``StartInstances`` of a ``stopping`` (or terminated) instance and
  ``StopInstances`` of a terminated one → ``IncorrectInstanceState``, as EC2 answers.
  TerminateInstances of a stopping instance terminates it. CreateImage works in either state
  (moto does not check the state, nor does EC2 refuse it).
* A group member stopped through StopInstances fails its group's EC2 health check like one
  terminated in EC2 (phases.on_ec2_terminated).
* An instance leaving ``running`` takes its SSM Agent with it (run_command.instance_down);
  one started again brings it back.
* moto ignores RunInstances ``ClientToken`` (and keeps "ABCDE" when none is given). With a
  token, the same token and the same parameters answer the reservation the first call made
  (as RunInstances answers: instances ``pending``) and launch nothing, whatever became of
  its instances; with other parameters ``IdempotentParameterMismatch``.
  Tokens are kept per account and region on moto's EC2 backend until reset.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from moto.ec2.exceptions import EC2ClientError

from .launch_templates import IdempotentParameterMismatch

if TYPE_CHECKING:
    from .state import Emulator

# Request parameters that are not part of what an idempotent RunInstances asks for.
_NOT_COMPARED = frozenset({"Action", "Version", "ClientToken", "DryRun"})


class IncorrectInstanceState(EC2ClientError):
    def __init__(self, instance_id: str, verb: str) -> None:
        super().__init__(
            "IncorrectInstanceState",
            f"This instance '{instance_id}' is not in a state from which it can be {verb}.",
        )


class Stopper:
    """Instances in ``stopping``; ``tick`` (under Emulator.lock) makes them ``stopped``."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.reset()

    def reset(self) -> None:
        self.due: dict[str, tuple[float, Any]] = {}

    def begin(self, instance: Any) -> None:
        delay = float(self.emu.config.instance_stopping_secs)
        if delay <= 0:
            _set_state(instance, "stopped", 80)
            return
        _set_state(instance, "stopping", 64)
        self.due[instance.id] = (time.monotonic() + delay, instance)

    def tick(self, now: float) -> None:
        for instance_id, (due, instance) in list(self.due.items()):
            if due > now:
                continue
            del self.due[instance_id]
            if instance.state == "stopping":
                _set_state(instance, "stopped", 80)

    def secs_left(self, instance_id: str) -> float | None:
        item = self.due.get(instance_id)
        return None if item is None else round(max(0.0, item[0] - time.monotonic()), 3)


def _set_state(instance: Any, name: str, code: int) -> None:
    instance._state.name = name
    instance._state.code = code


def install() -> None:
    from moto.ec2.models.instances import Instance

    from .state import emulator

    original_stop, original_start, original_terminate = Instance.stop, Instance.start, Instance.terminate

    def stop(self: Any) -> Any:
        previous = _copy_state(self)
        if self.state in ("stopping", "stopped"):
            return previous
        if self.state in ("shutting-down", "terminated"):
            raise IncorrectInstanceState(self.id, "stopped")
        original_stop(self)  # nics, reason, state reason; state set again below
        emu = emulator()
        emu.stopper.begin(self)
        emu.run_commands.instance_down(self.id)
        _health_check(emu, self)
        return previous

    def start(self: Any) -> Any:
        if self.state in ("stopping", "shutting-down", "terminated"):
            raise IncorrectInstanceState(self.id, "started")
        was_running = self.state == "running"
        previous = original_start(self)
        if not was_running:
            emulator().run_commands.instance_up(self.id)
        return previous

    def terminate(self: Any) -> Any:
        previous = original_terminate(self)
        emu = emulator()
        emu.stopper.due.pop(self.id, None)
        emu.run_commands.instance_down(self.id)
        return previous

    Instance.stop = stop  # type: ignore[method-assign]
    Instance.start = start  # type: ignore[method-assign]
    Instance.terminate = terminate  # type: ignore[method-assign]


def _copy_state(instance: Any) -> Any:
    import copy

    return copy.copy(instance._state)


def _health_check(emu: Emulator, instance: Any) -> None:
    """A stopped group member fails the EC2 health check (noticed after the usual delay)."""
    from moto.autoscaling.models import autoscaling_backends

    backend = autoscaling_backends[instance.ec2_backend.account_id][instance.ec2_backend.region_name]
    emu.phases.on_ec2_terminated(backend, [instance.id])


# ------------------------------------------------------------- RunInstances
def _fingerprint(querystring: dict[str, Any]) -> str:
    compared = {k: v for k, v in querystring.items() if k not in _NOT_COMPARED}
    return json.dumps(compared, sort_keys=True, default=str)


def earlier_reservation(ec2_backend: Any, token: str | None, querystring: dict[str, Any]) -> Any | None:
    """The reservation an earlier RunInstances with ``token`` made (None: a new token);
    IdempotentParameterMismatch when that call asked for something else."""
    if not token:
        return None
    seen = getattr(ec2_backend, "_lg_run_tokens", {}).get(token)
    if seen is None:
        return None
    fingerprint, reservation_id = seen
    if fingerprint != _fingerprint(querystring):
        raise IdempotentParameterMismatch()
    return ec2_backend.reservations.get(reservation_id)


def remember_reservation(ec2_backend: Any, token: str | None, querystring: dict[str, Any], reservation: Any) -> None:
    if not token:
        return
    if not hasattr(ec2_backend, "_lg_run_tokens"):
        ec2_backend._lg_run_tokens = {}
    ec2_backend._lg_run_tokens[token] = (_fingerprint(querystring), reservation.id)
