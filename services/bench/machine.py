"""What a benchmark ran on, recorded beside its figures."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError):
        return None
    return round(kib / 2**20, 1)


def machine_info() -> dict[str, object]:
    """CPU, cores, memory, OS, Python and torch versions (torch imported only here)."""
    import torch

    return {"host": platform.node(), "cpu": cpu_model(), "cpus": os.cpu_count(), "memory_gib": memory_gib(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda_available": torch.cuda.is_available()}
