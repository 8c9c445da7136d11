"""Bringing the stack's processes back when they die: a restart after an exponential backoff, a restart count per
process, and a crash-loop limit past which the supervisor gives up (and the stack stops, as it did before restarts).

    restarts = Restarts(RestartPolicy())
    every tick:  gave_up = restarts.tick(processes)   # restarts what is due; the process that crash-loops, or None

A process that stayed up for `stable_after_s` starts its backoff afresh when it next dies; one that keeps dying waits
longer each time (first_delay_s, ×2, … up to max_delay_s); more than `max_restarts` restarts within `window_s` is a
crash loop. Readiness is not awaited here: the other processes (and the orchestrator's circuit breakers) see a
restarting dependency as unavailable until it is ready again.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from services.supervisor.processes import ManagedProcess

log = logging.getLogger("sluice.supervisor")


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    first_delay_s: float = 0.5
    max_delay_s: float = 15.0
    max_restarts: int = 5  # within window_s; one more death is a crash loop
    window_s: float = 300.0
    stable_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.first_delay_s < 0 or self.max_delay_s < self.first_delay_s:
            raise ValueError("need 0 <= first_delay_s <= max_delay_s")
        if self.max_restarts < 0 or self.window_s <= 0:
            raise ValueError("need max_restarts >= 0 and window_s > 0")


@dataclass(slots=True)
class RestartState:
    """One process's restart history."""

    count: int = 0  # restarts since the stack started
    recent: deque[float] = field(default_factory=deque)  # when each restart in the window happened
    delay_s: float = 0.0  # the backoff the last restart waited
    due_at: float | None = None  # a restart is pending until then
    started_at: float = 0.0  # when the process was last (re)started


class Restarts:
    def __init__(self, policy: RestartPolicy | None = None, clock: Callable[[], float] = time.monotonic,
                 on_death: Callable[[ManagedProcess], None] | None = None) -> None:
        self.policy = policy or RestartPolicy()
        self.clock = clock
        self.on_death = on_death  # clean-up after an unexpected exit (e.g. Triton's orphaned stubs)
        self._states: dict[str, RestartState] = {}

    def state(self, name: str) -> RestartState:
        return self._states.setdefault(name, RestartState(started_at=self.clock()))

    def counts(self) -> dict[str, int]:
        """Restarts per process so far (for the state file and `sluice status`)."""
        return {name: state.count for name, state in self._states.items()}

    def tick(self, processes: Iterable[ManagedProcess]) -> ManagedProcess | None:
        """Schedules a restart for each newly dead process, starts those whose backoff is over, and returns a
        process that is crash-looping (the caller stops the stack), else None."""
        now = self.clock()
        for process in processes:
            if process.alive():
                continue
            state = self.state(process.name)
            if state.due_at is None:
                if self.on_death is not None:
                    self.on_death(process)
                if not self._schedule(process, state, now):
                    return process
            elif now >= state.due_at:
                self._restart(process, state, now)
        return None

    def _schedule(self, process: ManagedProcess, state: RestartState, now: float) -> bool:
        policy = self.policy
        while state.recent and state.recent[0] < now - policy.window_s:
            state.recent.popleft()
        code = process.popen.returncode if process.popen is not None else None
        if len(state.recent) >= policy.max_restarts:
            log.error("%s exited (code %s) after %d restarts within %.0f s: crash loop, giving up", process.name,
                      code, len(state.recent), policy.window_s)
            return False
        stable = now - state.started_at >= policy.stable_after_s
        state.delay_s = policy.first_delay_s if stable or state.count == 0 else min(
            max(state.delay_s * 2, policy.first_delay_s), policy.max_delay_s)
        state.due_at = now + state.delay_s
        log.warning("%s exited unexpectedly (code %s); restarting in %.1f s (restart %d)", process.name, code,
                    state.delay_s, state.count + 1)
        return True

    def _restart(self, process: ManagedProcess, state: RestartState, now: float) -> None:
        state.due_at = None
        state.count += 1
        state.recent.append(now)
        state.started_at = now
        try:
            process.start()
        except OSError as exc:  # counted as a restart: the next tick sees it dead and backs off further
            log.error("%s could not be restarted: %s", process.name, exc)
            return
        log.warning("%s restarted (pid %s, restart %d)", process.name, process.pid, state.count)
