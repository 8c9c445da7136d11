"""Finding and reaping the Python-backend stubs a dead Triton server left behind, in a fake /proc and /dev/shm."""

from __future__ import annotations

from pathlib import Path

from services.supervisor.stubs import reap_stubs, stubs_of


def fake_process(proc: Path, pid: int, argv: list[str]) -> None:
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def stub(model: str, region: str, parent: int) -> list[str]:
    return ["/run/triton_backends/python/triton_python_backend_stub", f"/run/model_repository/{model}/1/model.py",
            region, "1048576", "1048576", str(parent), "/run/triton_backends/python", "336", f"{model}_0_0",
            "DEFAULT"]


def test_only_the_dead_servers_stubs_are_found(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    fake_process(proc, 10, stub("tensorrt_llm", "sluice1x2aaa", parent=7))
    fake_process(proc, 11, stub("embedder", "sluice1x2bbb", parent=7))
    fake_process(proc, 12, stub("tensorrt_llm", "sluice3x4ccc", parent=8))  # another server's
    fake_process(proc, 13, ["/usr/bin/python3", "-m", "x", "y", "z", "7"])  # not a stub
    (proc / "self").mkdir()
    assert sorted(stubs_of(7, proc)) == [(10, "sluice1x2aaa"), (11, "sluice1x2bbb")]
    assert stubs_of(9, proc) == []


def test_reaping_removes_the_shared_memory_regions(tmp_path: Path) -> None:
    proc, shm = tmp_path / "proc", tmp_path / "shm"
    shm.mkdir()
    fake_process(proc, 2**22 + 1, stub("tensorrt_llm", "sluice1x2aaa", parent=7))  # no such pid: kill is a no-op
    (shm / "sluice1x2aaa").write_bytes(b"x")
    (shm / "sluice3x4ccc").write_bytes(b"x")
    assert reap_stubs(7, proc, shm) == 1
    assert [p.name for p in shm.iterdir()] == ["sluice3x4ccc"]
