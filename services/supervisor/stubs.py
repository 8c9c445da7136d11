"""Clean-up after a Triton server that died without shutting down (SIGKILL, a crash): its Python-backend stubs
outlive it — the LLM stubs keep their engine thread and hundreds of MB each — and their shared-memory regions stay
in /dev/shm. Each stub names its server's pid and its region on its command line (Triton 2.51:
`triton_python_backend_stub <model.py> <shm region> <shm size> <growth> <parent pid> <backend dir> ...`), so exactly
the dead server's stubs are found, whatever other servers (replicas, other stacks) run on the machine."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

log = logging.getLogger("sluice.supervisor")

STUB = "triton_python_backend_stub"
SHM = Path("/dev/shm")


def stubs_of(server_pid: int, proc: Path = Path("/proc")) -> list[tuple[int, str]]:
    """(stub pid, shm region) of each Python-backend stub started by the Triton server `server_pid`."""
    found = []
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            argv = (proc / entry.name / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) < 6 or not argv[0].endswith(STUB.encode()):
            continue
        parent, region = argv[5].decode(errors="replace"), argv[2].decode(errors="replace")
        if parent == str(server_pid) and region and "/" not in region:
            found.append((int(entry.name), region))
    return found


def reap_stubs(server_pid: int, proc: Path = Path("/proc"), shm: Path = SHM) -> int:
    """Kills the dead server's stubs and removes their shared-memory regions. Returns how many stubs it killed."""
    stubs = stubs_of(server_pid, proc)
    for pid, region in stubs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # a stub ignores SIGTERM: only its server may stop it
        (shm / region).unlink(missing_ok=True)
    if stubs:
        log.warning("killed %d Python-backend stubs left by Triton pid %d and removed their shared memory",
                    len(stubs), server_pid)
    return len(stubs)
