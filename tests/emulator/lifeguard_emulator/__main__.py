"""``python -m lifeguard_emulator [--host 127.0.0.1] [--port 0] [--port-file PATH]``

Serves moto plus the emulator's additions on one HTTP port until SIGTERM/SIGINT.
``--port 0`` picks a free port; the port actually used is written to ``--port-file``
(atomically, once the socket is listening) and removed again on a clean exit.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from .server import Ticker, build_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lifeguard_emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=4566, help="port to bind; 0 picks a free one (default 4566)")
    parser.add_argument("--port-file", help="write the bound port to this file once listening")
    parser.add_argument("--verbose", action="store_true", help="log every HTTP request to stderr")
    args = parser.parse_args(argv)

    server, emu = build_server(args.host, args.port, verbose=args.verbose)
    port = server.server_port
    os.environ.setdefault("MOTO_PORT", str(port))
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    Ticker(emu).start()
    serving = threading.Thread(target=server.serve_forever, name="lifeguard-http", daemon=True)
    serving.start()

    host = args.host if ":" not in args.host else f"[{args.host}]"
    endpoint = f"http://{host}:{port}"
    print(f"lifeguard emulator listening on {endpoint}", flush=True)
    print(f"  AWS endpoint URL : {endpoint}", flush=True)
    print(f"  IMDS base URL    : {endpoint}/_imds/<instance-id>   (e.g. {endpoint}/_imds/i-0123456789abcdef0/latest/api/token)", flush=True)
    print(f"  control API      : {endpoint}/_lifeguard/health", flush=True)
    if args.port_file:
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)

    try:
        while not stop.wait(0.5):
            if not serving.is_alive():
                print("lifeguard emulator: HTTP server stopped unexpectedly", file=sys.stderr)
                return 1
    finally:
        emu.stopping.set()
        server.shutdown()
        server.server_close()
        if args.port_file:
            try:
                os.remove(args.port_file)
            except OSError:
                pass
        print("lifeguard emulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
