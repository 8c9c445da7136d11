"""How `sluice scale` and `sluice status` reach a running supervisor: a Unix socket in the run directory (only this
user can reach it), one JSON request line in, one JSON reply line out.

Requests: {"op": "status"} and {"op": "scale", "orchestrators": N | null, "triton": N | null}.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

SOCKET_NAME = "supervisor.sock"
log = logging.getLogger("sluice.supervisor")

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlError(RuntimeError):
    """The supervisor could not be reached, or it refused the request."""


def socket_path(run_dir: Path) -> Path:
    return run_dir / SOCKET_NAME


class ControlServer:
    """Serves requests on the socket in background threads; `handle` answers each (it may take long: a scale)."""

    def __init__(self, run_dir: Path, handle: Handler) -> None:
        path = socket_path(run_dir)
        path.unlink(missing_ok=True)

        class _Request(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    request = json.loads(self.rfile.readline() or b"{}")
                    if not isinstance(request, dict):
                        raise ValueError("a request is a JSON object")
                    reply = handle(request)
                except (ValueError, RuntimeError) as error:  # a bad request, or a scale that could not be done
                    reply = {"ok": False, "error": str(error)}
                self.wfile.write(json.dumps(reply).encode() + b"\n")

        self.path = path
        self.server = socketserver.ThreadingUnixStreamServer(str(path), _Request)
        self.server.daemon_threads = True
        path.chmod(0o600)
        self._thread = threading.Thread(target=self.server.serve_forever, name="supervisor-control", daemon=True)

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.path.unlink(missing_ok=True)


def request(run_dir: Path, message: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
    """Send one request to the supervisor of the stack in `run_dir` and return its reply."""
    path = socket_path(run_dir)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(message).encode() + b"\n")
            with sock.makefile("rb") as replies:
                line = replies.readline()
    except OSError as error:
        raise ControlError(f"cannot reach the supervisor at {path}: {error}") from None
    if not line:
        raise ControlError("the supervisor closed the connection without answering")
    reply = json.loads(line)
    if not reply.get("ok", False):
        raise ControlError(reply.get("error", "the supervisor refused the request"))
    return reply
