"""A stack of its own for the fault tests: they kill processes, so they must not share the session `stack`.

    with supervised_stack(tmp_path) as own:      # started, with the supervisor's restart loop on a thread
        own.settings, own.stack, own.api_key("tenant"), own.usage("tenant"), own.kill("triton")
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.common.settings import Settings
from services.supervisor.processes import ManagedProcess
from services.supervisor.restarts import RestartPolicy
from services.supervisor.stack import Stack
from tests.conftest import stack_settings

# Quick restarts for tests; the crash-loop limit stays in force.
TEST_RESTARTS = RestartPolicy(first_delay_s=0.2, max_delay_s=2.0, max_restarts=3, window_s=120.0)


class OwnStack:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.settings: Settings = stack.settings
        self.gave_up: ManagedProcess | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="supervise", daemon=True)

    def _supervise(self) -> None:
        while not self._stop.wait(0.2):
            failed = self.stack.supervise()
            if failed is not None:
                self.gave_up = failed
                return

    def process(self, name: str) -> ManagedProcess:
        return next(p for p in self.stack.processes if p.name == name)

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> int:
        pid = self.process(name).pid
        assert pid is not None
        os.kill(pid, sig)
        return pid

    def api_key(self, tenant: str) -> str:
        from services.orchestrator.tenancy.store import issue_key

        return issue_key(self.settings.db_url, tenant, tier="enterprise", name="fault-tests")

    def usage(self, tenant: str) -> list:
        """The tenant's usage rows, oldest first."""
        from services.orchestrator.tenancy.usage import usage_rows_of

        return usage_rows_of(self.settings.db_url, tenant)


@contextmanager
def supervised_stack(run_dir: Path, *, shutdown_grace: float = 5.0,
                     restart_policy: RestartPolicy = TEST_RESTARTS) -> Iterator[OwnStack]:
    stack = Stack(stack_settings(run_dir), shutdown_grace=shutdown_grace, restart_policy=restart_policy)
    stack.start()
    own = OwnStack(stack)
    own._thread.start()
    try:
        yield own
    finally:
        own._stop.set()
        own._thread.join(5)
        stack.stop()
