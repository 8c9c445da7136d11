"""A Triton stub's watchdog ends it when its server dies without a word (SIGKILL), as a crashed replica does — even
while the stub holds the GIL for good (blocked in a call to the dead server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from services.supervisor.processes import pid_alive

REPO = Path(__file__).resolve().parents[2]

# The "server": starts a "stub" that watches it, prints the stub's pid, then waits to be killed.
SERVER = f"""
import subprocess, sys, time
stub = subprocess.Popen([sys.executable, "-c", '''
import re, sys
sys.path.insert(0, {str(REPO)!r})
from engine.stub_lifetime import watch_server
watch_server(every_s=0.05)
print("watching", flush=True)
re.match(r"(a+)+$", "a" * 64 + "b")  # backtracks for ages without releasing the GIL
'''], stdout=subprocess.PIPE, text=True)
assert stub.stdout.readline().strip() == "watching"
print(stub.pid, flush=True)
time.sleep(60)
"""


def test_the_stub_ends_when_its_server_is_killed() -> None:
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        stub_pid = int(server.stdout.readline())
        time.sleep(0.2)
        assert pid_alive(stub_pid)  # the watchdog keeps quiet while the server lives
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        deadline = time.monotonic() + 5
        while pid_alive(stub_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(stub_pid), "the stub outlived its server"
    finally:
        if server.poll() is None:
            server.kill()
