"""Memory sampling from /proc for `sluice bench soak`: RSS of a process tree, the slope, a restarted pid."""

from __future__ import annotations

import os
import subprocess
import sys

from services.bench.proc_memory import MemorySampler, children_by_parent, rss_kb, slope_per_minute, tree_rss_kb


def test_rss_of_this_process_and_its_tree() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"  # exec'd and settled
        own, child_rss = rss_kb(os.getpid()), rss_kb(child.pid)
        assert own is not None and own > 1000 and child_rss is not None and child_rss > 1000
        slack = 1024  # both processes' RSS may move by a few pages between the readings
        assert tree_rss_kb(os.getpid(), children_by_parent()) >= own + child_rss - slack
    finally:
        child.kill()
        child.wait()
    assert rss_kb(child.pid) is None


def test_slope_is_per_minute() -> None:
    assert slope_per_minute([(0, 100.0), (30, 101.0), (60, 102.0)]) == 2.0
    assert slope_per_minute([(0, 1.0)]) is None


def test_sampler_follows_a_restarted_process() -> None:
    pids = {"me": os.getpid()}
    ticks = iter(range(100))
    sampler = MemorySampler(lambda: dict(pids), clock=lambda: float(next(ticks)))
    sampler.sample()
    pids["me"] = 999_999_999  # gone: no point, but the pid is noted
    sampler.sample()
    summary = sampler.summary()["me"]
    assert summary["pids"] == [os.getpid(), 999_999_999] and summary["samples"] == 1
