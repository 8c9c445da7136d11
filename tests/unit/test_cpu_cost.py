"""`sluice bench cost` accounting: CPU time from /proc, and the platform / engine split per streamed token."""

from __future__ import annotations

import os
import subprocess
import sys

from services.bench.cpu_cost import cpu_delta, cpu_ms, cpu_snapshot, per_token


def test_cpu_of_a_process_tree_counts_its_children() -> None:
    spin = "import time\nwhile time.process_time() < 0.4: pass\nprint('spun', flush=True)\ntime.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", spin], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "spun"  # 400 ms of CPU spent
        own = cpu_ms(os.getpid())
        spent = cpu_snapshot({"bench": os.getpid()})["bench"]
        assert own is not None and spent >= own + 390  # the child's CPU is in the tree's total (10 ms ticks)
    finally:
        child.kill()
        child.wait()
    assert cpu_ms(child.pid) is None  # gone


def test_per_token_splits_platform_from_engine() -> None:
    spent = cpu_delta({"orchestrator": 100.0, "tritonserver": 50.0},
                      {"orchestrator": 300.0, "tritonserver": 150.0, "triton:tensorrt_llm": 800.0,
                       "triton:tensorrt_llm_small": 0.0, "triton:safety_classifier": 40.0, "envoy": 20.0})
    figures = per_token(spent, 100)
    assert figures["orchestrator"] == 2.0 and figures["triton:tensorrt_llm"] == 8.0
    assert figures["platform"] == 2.6  # orchestrator 200 + classifier 40 + envoy 20, over 100 tokens
    assert figures["engine"] == 9.0    # tritonserver 100 + the LLM slot 800
    assert per_token(spent, 0) == {}
