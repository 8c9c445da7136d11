"""Generate the Python gRPC stubs and Envoy's descriptor set from protos/ (the one source of the wire contract)."""

from __future__ import annotations

import sysconfig
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "protos"
GEN_ROOT = REPO_ROOT / "gen"


def _include_dirs() -> list[Path]:
    """protos/ plus the site-packages that ship google/api and google/protobuf .proto files."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    grpc_tools_protos = Path(protoc.__file__).parent / "_proto"
    return [PROTO_ROOT, purelib, grpc_tools_protos]


def generate(gen_root: Path = GEN_ROOT) -> Path:
    """Writes gen/python/sluice/v1/*_pb2*.py and gen/sluice.pb; returns the descriptor set path."""
    python_out = gen_root / "python"
    python_out.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    includes = [f"-I{d}" for d in _include_dirs()]
    descriptor = gen_root / "sluice.pb"
    args = [
        "grpc_tools.protoc",
        *includes,
        f"--python_out={python_out}",
        f"--pyi_out={python_out}",
        f"--grpc_python_out={python_out}",
        "--include_imports",
        f"--descriptor_set_out={descriptor}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {protos}")
    for package_dir in {python_out / Path(p).parent for p in protos} | {python_out / "sluice"}:
        (package_dir / "__init__.py").touch()
    return descriptor
