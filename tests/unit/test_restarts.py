"""The supervisor's restart policy, driven by a fake clock and fake processes: backoff doubling, the reset after a
stable run, and the crash-loop limit."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from services.supervisor.restarts import RestartPolicy, Restarts


@dataclass
class FakePopen:
    returncode: int | None = -9


@dataclass
class FakeProcess:
    name: str = "triton"
    running: bool = True
    starts: int = 0
    popen: FakePopen = field(default_factory=FakePopen)

    @property
    def pid(self) -> int:
        return 1000 + self.starts

    def alive(self) -> bool:
        return self.running

    def start(self) -> None:
        self.starts += 1
        self.running = True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(policy: RestartPolicy) -> tuple[Restarts, FakeProcess, Clock]:
    clock = Clock()
    restarts = Restarts(policy, clock)
    process = FakeProcess()
    restarts.tick([process])  # seen alive: its run starts now
    return restarts, process, clock


def crash_and_restart(restarts: Restarts, process: FakeProcess, clock: Clock) -> float:
    """Kills the process, ticks until it is restarted; returns the delay it waited."""
    process.running = False
    assert restarts.tick([process]) is None
    died = clock.now
    while not process.running:
        clock.now += 0.125  # exact in binary: the delays below are multiples of it
        assert restarts.tick([process]) is None
    return round(clock.now - died, 2)


def test_backoff_doubles_while_the_process_keeps_dying() -> None:
    restarts, process, clock = make(RestartPolicy(first_delay_s=0.5, max_delay_s=2.0, max_restarts=10,
                                                  stable_after_s=60))
    delays = [crash_and_restart(restarts, process, clock) for _ in range(5)]
    assert delays == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert restarts.counts() == {"triton": 5} and process.starts == 5


def test_a_stable_run_resets_the_backoff() -> None:
    restarts, process, clock = make(RestartPolicy(first_delay_s=0.5, max_delay_s=8.0, max_restarts=10,
                                                  stable_after_s=30))
    assert crash_and_restart(restarts, process, clock) == 0.5
    assert crash_and_restart(restarts, process, clock) == 1.0
    clock.now += 31  # up long enough
    assert crash_and_restart(restarts, process, clock) == 0.5


def test_a_crash_loop_gives_up() -> None:
    restarts, process, clock = make(RestartPolicy(first_delay_s=0.125, max_delay_s=0.125, max_restarts=3, window_s=60))
    for _ in range(3):
        crash_and_restart(restarts, process, clock)
    process.running = False
    assert restarts.tick([process]) is process  # a fourth death within the window
    assert process.starts == 3


def test_restarts_outside_the_window_do_not_count() -> None:
    restarts, process, clock = make(RestartPolicy(first_delay_s=0.125, max_delay_s=0.125, max_restarts=2, window_s=10,
                                                  stable_after_s=5))
    for _ in range(5):
        crash_and_restart(restarts, process, clock)
        clock.now += 11
    assert restarts.counts() == {"triton": 5}


def test_policy_is_validated() -> None:
    with pytest.raises(ValueError):
        RestartPolicy(first_delay_s=5, max_delay_s=1)
