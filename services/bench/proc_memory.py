"""Resident memory of the stack's processes over time, read from /proc (no psutil): each named process counts with
its descendants (Triton's Python-backend stubs run the models), and a restarted process is followed by its new pid.

    sampler = MemorySampler(lambda: {"triton": 1234, ...})
    sampler.sample()          # every few seconds
    sampler.summary()         # per process: start, end and peak MB, growth, slope in MB per minute
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")


def rss_kb(pid: int) -> int | None:
    """VmRSS of one process in kB; None when it is gone (or a kernel thread)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def children_by_parent() -> dict[int, list[int]]:
    """Every process's children, from one pass over /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            stat = (PROC / entry.name / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may contain spaces
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    return children


def tree_rss_kb(pid: int, children: dict[int, list[int]]) -> int | None:
    """RSS of a process and all its descendants; None when the process itself is gone."""
    own = rss_kb(pid)
    if own is None:
        return None
    total, stack = own, list(children.get(pid, ()))
    while stack:
        child = stack.pop()
        total += rss_kb(child) or 0
        stack.extend(children.get(child, ()))
    return total


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread * 60


@dataclass(slots=True)
class ProcessSeries:
    pids: list[int] = field(default_factory=list)  # more than one: the process was restarted
    points: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MB)

    def summary(self, skip_s: float = 0.0) -> dict[str, object]:
        """`skip_s`: the slope ignores the first seconds (caches and pools filling up under the first load)."""
        if not self.points:
            return {"pids": self.pids, "samples": 0}
        values = [mb for _, mb in self.points]
        settled = [(t, mb) for t, mb in self.points if t >= skip_s] or self.points
        slope = slope_per_minute(settled)
        return {"pids": self.pids, "samples": len(values), "start_mb": round(values[0], 1),
                "end_mb": round(values[-1], 1), "peak_mb": round(max(values), 1),
                "growth_mb": round(values[-1] - values[0], 1),
                "settled_growth_mb": round(settled[-1][1] - settled[0][1], 1),
                "slope_mb_per_min": None if slope is None else round(slope, 3)}


class MemorySampler:
    def __init__(self, pids: Callable[[], dict[str, int]], clock: Callable[[], float] = time.monotonic) -> None:
        self._pids = pids  # read again at every sample: the supervisor may have restarted something
        self._clock = clock
        self._started = clock()
        self.series: dict[str, ProcessSeries] = {}

    def sample(self) -> None:
        children = children_by_parent()
        now = self._clock() - self._started
        for name, pid in self._pids().items():
            series = self.series.setdefault(name, ProcessSeries())
            if pid not in series.pids:
                series.pids.append(pid)
            kb = tree_rss_kb(pid, children)
            if kb is not None:
                series.points.append((now, kb / 1024))

    def summary(self, skip_s: float = 0.0) -> dict[str, dict[str, object]]:
        return {name: series.summary(skip_s) for name, series in self.series.items()}
