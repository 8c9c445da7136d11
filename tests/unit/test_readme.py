"""The README stays true to the code: every `sluice` command line in its shell blocks parses with the real CLI, every
SLUICE_* variable the code reads is in its configuration reference, and every figure lives in BENCHMARKS.md with the
command that produced it."""

from __future__ import annotations

import re
import shlex

import pytest

from services.cli.main import build_parser
from services.common.settings import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
SHELL_BLOCK = re.compile(r"```bash\n(.*?)```", re.DOTALL)


def _sluice_commands() -> list[str]:
    commands = []
    for block in SHELL_BLOCK.findall(README):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            match = re.match(r"^(?:\S+=\S+ )*(?:\.venv/bin/)?sluice (.*)$", line)
            if match:
                commands.append(match.group(1))
    return commands


def test_the_readme_shows_sluice_commands() -> None:
    assert len(_sluice_commands()) >= 8


@pytest.mark.parametrize("command", _sluice_commands())
def test_every_sluice_command_in_the_readme_parses(command: str) -> None:
    args = build_parser().parse_args(shlex.split(command))  # exits (fails the test) on a bad command line
    assert callable(args.func)


def test_every_setting_the_code_reads_is_in_the_configuration_reference() -> None:
    read = set()
    for folder in ("services", "engine", "pipelines", "model_repository"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            read |= set(re.findall(r"SLUICE_[A-Z0-9_]+", path.read_text(encoding="utf-8")))
    reference = README.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"SLUICE_[A-Z0-9_]+", reference))
    documented |= {f"SLUICE_TRITON_{kind}_PORT" for kind in ("HTTP", "GRPC", "METRICS")}  # written as _GRPC_PORT
    missing = sorted(name for name in read - documented if not name.startswith("SLUICE_TEST_"))
    assert missing == []


def test_benchmark_figures_name_their_command() -> None:
    benchmarks = (REPO_ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    sections = benchmarks.split("\n## ")[1:]
    assert len(sections) >= 10
    for section in sections:
        assert "Command" in section or "Measured with" in section, section.splitlines()[0]
