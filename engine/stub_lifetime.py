"""Ties a Triton Python-backend stub's life to its tritonserver.

When the server dies without unloading its models (SIGKILL, the OOM killer, a crashed replica), its stub processes
are re-parented and never told: they live on, holding their models (the engine's KV pool, the embedder's weights).
Every model of the repository starts this watch in `initialize`."""

from __future__ import annotations

import os
import threading
import time


def exit_with_server(server_pid: int, every_s: float = 1.0) -> None:
    """Ends this process once its parent, `server_pid`, is gone."""
    while os.getppid() == server_pid:
        time.sleep(every_s)
    os._exit(0)


def watch_server(every_s: float = 1.0) -> threading.Thread:
    """Starts a daemon thread that ends this stub within `every_s` of its tritonserver's death."""
    watch = threading.Thread(target=exit_with_server, args=(os.getppid(), every_s), name="sluice-server-watch",
                             daemon=True)
    watch.start()
    return watch
