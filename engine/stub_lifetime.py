"""Ties a Triton Python-backend stub's life to its tritonserver.

When the server dies without unloading its models (SIGKILL, the OOM killer, a crashed replica), its stub processes
are re-parented and never told: they live on, holding their models (the engine's KV pool, the embedder's weights).
Every model of the repository starts a watchdog in `initialize`: a small shell process, its own child, that kills it
once the server has gone. A thread in the stub would not do: a stub thread blocked in a call to the dead server
(a `pb_utils` metric update is a round trip to it) holds the GIL for good, and no other thread of that stub runs
again — seen in CI, where the engine's stub of a killed replica outlived it that way."""

from __future__ import annotations

import os
import subprocess

# $1 the server, $2 the stub, $3 seconds between checks. Ends with either; kills the stub only if the server went.
_WATCHDOG = ('while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep "$3"; done; '
             'kill -0 "$1" 2>/dev/null || kill -KILL "$2" 2>/dev/null; exit 0')


def watch_server(every_s: float = 1.0) -> subprocess.Popen[bytes]:
    """Starts the watchdog of this stub (the calling process) and its server (its parent)."""
    return subprocess.Popen(["/bin/sh", "-c", _WATCHDOG, "sluice-stub-watchdog", str(os.getppid()), str(os.getpid()),
                             str(every_s)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, close_fds=True)
