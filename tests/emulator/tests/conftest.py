"""Fixtures: one emulator process per test session (free port), reset before each test."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import pytest

from helpers import EMULATOR_DIR, SHORT_TIMINGS, Emulator

@pytest.fixture(scope="session")
def emulator_process() -> Any:
    tmp = tempfile.mkdtemp(prefix="lg-emu-")
    port_file = os.path.join(tmp, "port")
    env = dict(os.environ, PYTHONPATH=str(EMULATOR_DIR))
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(key, None)
    log = open(os.path.join(tmp, "emulator.log"), "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifeguard_emulator", "--host", "127.0.0.1", "--port", "0", "--port-file", port_file],
        cwd=str(EMULATOR_DIR),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 60
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"emulator did not start; see {log.name}")
        time.sleep(0.05)
    port = int(open(port_file).read().strip())
    yield {"endpoint": f"http://127.0.0.1:{port}", "proc": proc, "port_file": port_file, "log": log.name}
    proc.terminate()
    try:
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


@pytest.fixture()
def emu(emulator_process: Any) -> Emulator:
    e = Emulator(emulator_process["endpoint"])
    e.ok("POST", "reset")
    # The defaults are AWS's timings (1 s plain Terminating, 2 s plain Pending, 10 s until
    # the health check notices an instance gone in EC2, ...). The suite shortens them so
    # every phase is still seen but each test stays within a few seconds; tests about the
    # defaults themselves reset the config first.
    e.ok("POST", "config", SHORT_TIMINGS)
    return e


@pytest.fixture()
def asg(emu: Emulator) -> Any:
    return emu.client("autoscaling")


@pytest.fixture()
def ec2(emu: Emulator) -> Any:
    return emu.client("ec2")


@pytest.fixture()
def sqs(emu: Emulator) -> Any:
    return emu.client("sqs")


@pytest.fixture()
def events(emu: Emulator) -> Any:
    return emu.client("events")
