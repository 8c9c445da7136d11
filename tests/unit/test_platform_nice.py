"""SLUICE_PLATFORM_NICE: the setting, and a supervised process started with a niceness."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from services.common.settings import PLATFORM_NICE_DEFAULT, Settings
from services.supervisor.processes import ManagedProcess


def _started(tmp_path: Path, nice: int) -> ManagedProcess:
    process = ManagedProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "log",
                             nice=nice)
    process.start()
    return process


@pytest.mark.parametrize("nice", [0, 4])
def test_a_process_starts_with_the_niceness_asked_for(tmp_path: Path, nice: int) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    process = _started(tmp_path, nice)
    try:
        assert process.pid is not None
        # `nice` sets it, then execs the command: wait until the child has got that far (the same pid throughout)
        deadline = time.monotonic() + 10
        while b"time.sleep" not in Path(f"/proc/{process.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.alive()
        assert os.getpriority(os.PRIO_PROCESS, process.pid) == min(base + nice, 19)
    finally:
        process.stop(5)
    assert not process.alive()


def test_the_setting_comes_from_the_environment_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLUICE_PLATFORM_NICE", raising=False)
    assert Settings.from_env().platform_nice == PLATFORM_NICE_DEFAULT > 0
    monkeypatch.setenv("SLUICE_PLATFORM_NICE", "0")
    assert Settings.from_env().platform_nice == 0
    for bad in ("-1", "20"):
        monkeypatch.setenv("SLUICE_PLATFORM_NICE", bad)
        with pytest.raises(ValueError, match="platform_nice"):
            Settings.from_env()
