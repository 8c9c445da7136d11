"""CLI: ``python -m pipelines.trtllm_engine --checkpoint models/sluice-demo --out .sluice/run/trtllm_engine``."""

from __future__ import annotations

import sys

from pipelines.trtllm_engine.build import main

if __name__ == "__main__":
    sys.exit(main())
