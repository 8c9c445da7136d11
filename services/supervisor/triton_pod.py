"""Triton on its own (a Kubernetes pod of the CPU overlay): render the model repository, then become tritonserver.

    SLUICE_HOST=0.0.0.0 python -m services.supervisor.triton_pod

The GPU overlay runs NVIDIA's Triton image instead, on a repository rendered with `sluice repo render --engine trtllm`.
"""

from __future__ import annotations

import os

from services.common.settings import Settings
from services.supervisor.repository import render_repository
from services.supervisor.triton import prepare_backends, triton_command, triton_env


def main() -> None:
    settings = Settings.from_env().replace(triton_replicas=1, triton_urls=())
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    command = triton_command(settings, render_repository(settings), prepare_backends(settings.run_dir))
    os.execve(command[0], command, triton_env())


if __name__ == "__main__":
    main()
