"""The WSGI application: control API, IMDS, call recording, fault injection, the
emulator's own Auto Scaling/EC2 actions, and moto's application for everything else."""

from __future__ import annotations

import sys
import threading
import time
import traceback
from typing import Any, Callable, Iterable

from moto.core.request import Request
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Response

from . import (
    awsreq,
    cloudtrail,
    control,
    ec2_instances,
    faults,
    identity,
    imds,
    launch_configurations,
    launch_templates,
    moto_fixes,
    realism,
    run_command_api,
    scaling,
    snapshots,
    ssm_documents,
    target_health,
)
from .autoscaling_api import LifeguardAutoScalingResponse
from .ec2_api import LifeguardEC2Response
from .state import Emulator, emulator

# Services whose requests reach moto under Emulator.lock: their models are shared with
# the lifecycle engine and the timer (CloudFormation and the load balancers can create or
# read Auto Scaling groups and instances).
LOCKED_SERVICES = frozenset({"autoscaling", "ec2", "cloudformation", "elasticloadbalancing"})
OWN_ACTIONS = {
    "autoscaling": (LifeguardAutoScalingResponse, LifeguardAutoScalingResponse.INTERCEPTED),
    "ec2": (LifeguardEC2Response, LifeguardEC2Response.INTERCEPTED),
}


class EmulatorRequest(Request):
    from_wsgi_server = True


class App:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.moto = DomainDispatcherApplication(create_backend_app)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or ""
        if path.startswith("/_lifeguard"):
            return control.handle(self.emu, environ)(environ, start_response)
        if path.startswith("/_imds/"):
            return self._imds(environ, start_response, path[len("/_imds/") :])
        return self._aws(environ, start_response)

    # ------------------------------------------------------------------ IMDS
    def _imds(self, environ: dict[str, Any], start_response: Callable[..., Any], rest: str) -> Iterable[bytes]:
        instance_id, _, sub = rest.partition("/")
        sub = "/" + sub
        method = environ.get("REQUEST_METHOD", "GET")
        call = self.emu.recorder.start(
            "imds",
            sub[len("/latest/") :] if sub.startswith("/latest/") else sub,
            {"instance_id": instance_id, "method": method, "path": sub},
            None,
        )
        mode = None
        with self.emu.lock:
            rec = self.emu.records.get(instance_id)
            if rec is not None and rec.imds_fault:
                mode = rec.imds_fault
                if rec.imds_fault_remaining > 0:
                    rec.imds_fault_remaining -= 1
                    if rec.imds_fault_remaining == 0:
                        rec.imds_fault = None
        if mode == "timeout":
            self.emu.recorder.finish(call, 0, "Timeout")
            self.emu.stopping.wait(float(self.emu.config.imds_timeout_hang_secs))
            faults.drop_connection(environ)
        if mode == "status500":
            resp = Response("Internal Server Error", status=500, mimetype="text/plain")
        elif mode == "garbage":
            resp = Response(b"\x00\xffgarbage<html>{not-json", status=200, mimetype="text/plain")
        else:
            resp = imds.handle(self.emu, environ, instance_id, sub)
        self.emu.recorder.finish(call, resp.status_code, None)
        return resp(environ, start_response)

    # ------------------------------------------------------------------- AWS
    def _aws(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        info = awsreq.classify(environ)
        awsreq.route_presigned(environ, info.service)
        call = self.emu.recorder.start(info.service, info.action, info.params, info.region)
        key = awsreq.access_key(environ)
        sender = None
        if info.service == "sqs" and info.action in identity.SQS_SEND_ACTIONS:
            # SenderId of the messages: <role id>:<instance id> for IMDS credentials.
            sender = identity.sender_id(self.emu, key)
            call["sender_id"] = sender or identity.default_sender_id()
        fault = self.emu.faults.match(info.service, info.action, key, identity.sender_id(self.emu, key))
        if fault is not None:
            if fault.mode == "drop":
                self.emu.recorder.finish(call, 0, "ConnectionDropped")
                faults.drop_connection(environ)
            resp, code = faults.fault_response(fault, info.service, environ.get("REQUEST_METHOD", "GET"))
            self.emu.recorder.finish(call, resp.status_code, code)
            return resp(environ, start_response)
        if info.service == "autoscaling" and not self.emu.rate_limiter.take(self.emu.config.autoscaling_rate_limit):
            resp = faults.error_response(info.service, 400, "Throttling", "Rate exceeded", environ.get("REQUEST_METHOD", "GET"))
            self.emu.recorder.finish(call, resp.status_code, "Throttling")
            return resp(environ, start_response)

        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"] = int(status.split(" ", 1)[0])
            captured["headers"] = headers
            return start_response(status, headers, exc_info)

        own = OWN_ACTIONS.get(info.service)
        own_cls = own[0] if own is not None and info.action in own[1] else None
        locked = info.service in LOCKED_SERVICES
        if locked:
            self.emu.lock.acquire()
        try:
            if own_cls is not None:
                result: Iterable[bytes] = self._own(own_cls, environ)(environ, capture)
            else:
                with identity.sending_as(sender), identity.calling_as(identity.instance_identity(self.emu, key)):
                    result = self.moto(environ, capture)
            status = captured.get("status", 500)
            if locked or status >= 400:
                body = b"".join(result)
                if hasattr(result, "close"):
                    result.close()  # type: ignore[union-attr]
                result = [body]
            else:
                body = b""
        except Exception:
            self.emu.recorder.finish(call, 500, "InternalFailure")
            raise
        finally:
            if locked:
                self.emu.lock.release()
        code = awsreq.error_code(status, captured.get("headers", []), body) if status >= 400 else None
        self.emu.recorder.finish(call, status, code)
        if status < 400 and self.emu.config.cloudtrail_events and cloudtrail.wanted(info.service, info.action):
            auth = environ.get("HTTP_AUTHORIZATION", "")
            key = auth.split("Credential=", 1)[1].split("/", 1)[0] if "Credential=" in auth else None
            try:
                cloudtrail.emit(
                    info.service, info.action, info.region, info.params, body, key, environ.get("HTTP_USER_AGENT")
                )
            except Exception:
                traceback.print_exc(file=sys.stderr)
        return result

    def _own(self, cls: Any, environ: dict[str, Any]) -> Response:
        request = EmulatorRequest(environ)
        try:
            status, headers, body = cls.dispatch(request, request.raw_url, dict(request.headers))
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            message = f"{type(exc).__name__}: {exc}".replace("<", "(").replace(">", ")")
            body = (
                "<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code>"
                f"<Message>{message}</Message></Error><RequestId>0</RequestId></ErrorResponse>"
            )
            return Response(body, status=500, mimetype="text/xml")
        clean = {str(k): str(v) for k, v in (headers or {}).items() if str(k).lower() not in ("status", "content-length")}
        return Response(body, status=int(status), headers=clean)


class Ticker(threading.Thread):
    """Background timer: lifecycle timeouts, timed instance phases, AMIs, instance refresh,
    stopping instances, Run Command invocations, delayed event deliveries."""

    def __init__(self, emu: Emulator) -> None:
        super().__init__(name="lifeguard-ticker", daemon=True)
        self.emu = emu

    def run(self) -> None:
        emu = self.emu
        while not emu.stopping.wait(float(emu.config.tick_secs)):
            now = time.monotonic()
            try:
                with emu.lock:
                    emu.lifecycle.tick(now)
                    emu.phases.tick(now)
                    emu.images.tick(now)
                    if emu.scaler.blocked:
                        emu.scaler.retry_blocked()
                    emu.refresh.tick(now)
                    imds.enforce_spot(emu, now)
                    emu.stopper.tick(now)
                    emu.run_commands.tick(now)
                emu.deliveries.tick(now)
            except Exception:
                traceback.print_exc(file=sys.stderr)


_INSTALLED = False


def install_patches() -> None:
    global _INSTALLED
    if _INSTALLED:
        return
    scaling.install()
    launch_templates.install()
    snapshots.install()
    moto_fixes.install()
    identity.patch_sqs_sender_id()
    identity.patch_sts_caller_identity()
    ec2_instances.install()
    launch_configurations.install()
    run_command_api.install()  # before ssm_documents: SendCommand checks the document first
    ssm_documents.install()
    realism.install()
    target_health.install()
    _INSTALLED = True


class QuietHandler(MotoRequestHandler):
    verbose = False

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        if self.verbose:
            super().log_request(code, size)


def build_server(host: str, port: int, verbose: bool = False) -> tuple[BaseWSGIServer, Emulator]:
    install_patches()
    emu = emulator()
    QuietHandler.verbose = verbose
    server = make_server(host, port, App(emu), threaded=True, request_handler=QuietHandler)
    return server, emu
