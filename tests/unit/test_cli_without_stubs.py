import subprocess
import sys

# `make` runs `sluice protos` before the gRPC stubs exist: building the CLI's parser must not import them.
SCRIPT = """
import sys
sys.path = [p for p in sys.path if "gen/python" not in p]
from services.cli.main import build_parser
build_parser()
print(sorted(m for m in sys.modules if m == "sluice" or m.startswith("sluice.")))
"""


def test_the_cli_parser_builds_before_the_stubs_are_generated() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
