"""Native kernels for the CPU engine, compiled from the C++ sources beside this file.

`python -m engine.kernels.build` (run by `make`) compiles them once per machine into `build/kernels/`; the engine
loads that library when it exists and is newer than its sources, and otherwise runs the same computation in plain
PyTorch (gather + scaled_dot_product_attention), which the tests compare the kernels against.
"""

from __future__ import annotations

import logging
import os
from functools import cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCES = (Path(__file__).resolve().parent / "paged_attention.cpp",)
BUILD_SCRIPT = Path(__file__).resolve().parent / "build.py"  # its flags matter as much as the sources
BUILD_DIR = Path(os.environ.get("SLUICE_KERNEL_DIR") or Path(__file__).resolve().parents[2] / "build" / "kernels")
LIBRARY = BUILD_DIR / f"sluice_kernels-torch{torch.__version__.split('+')[0]}.so"


def is_current(library: Path = LIBRARY) -> bool:
    """Whether the library exists and was built after every source last changed."""
    return library.exists() and all(library.stat().st_mtime >= src.stat().st_mtime
                                    for src in (*SOURCES, BUILD_SCRIPT))


@cache
def load() -> bool:
    """Registers torch.ops.sluice.* from the built library; False (and a log line) when it is missing or stale.
    SLUICE_KERNELS=0 turns the kernels off."""
    if os.environ.get("SLUICE_KERNELS", "1") == "0":
        return False
    if not is_current():
        log.warning("native kernels not built (run `python -m engine.kernels.build`): using the PyTorch fallback")
        return False
    torch.ops.load_library(str(LIBRARY))
    return True


def paged_decode_available(q: torch.Tensor, pool: torch.Tensor) -> bool:
    """The kernel takes float32 queries over a float32 or bfloat16 KV pool on the CPU."""
    return (q.device.type == "cpu" and q.dtype == torch.float32 and pool.dtype in (torch.float32, torch.bfloat16)
            and load())
