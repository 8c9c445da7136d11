"""The supervisor's control socket (`sluice scale`, `sluice status` -> the running supervisor): a request and its
reply, a refused request, bad scale counts, and no supervisor at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.settings import Settings
from services.supervisor.control import ControlError, ControlServer, request
from services.supervisor.stack import Stack


def test_a_request_reaches_the_handler_and_its_reply_comes_back(tmp_path: Path) -> None:
    seen = []

    def handle(message: dict) -> dict:
        seen.append(message)
        if message.get("op") == "fail":
            raise ValueError("no such thing")
        return {"ok": True, "echo": message}

    server = ControlServer(tmp_path, handle).start()
    try:
        assert request(tmp_path, {"op": "status"})["echo"] == {"op": "status"}
        with pytest.raises(ControlError, match="no such thing"):
            request(tmp_path, {"op": "fail"})
        assert (tmp_path / "supervisor.sock").stat().st_mode & 0o077 == 0  # this user only
    finally:
        server.stop()
    assert seen == [{"op": "status"}, {"op": "fail"}]
    with pytest.raises(ControlError, match="cannot reach the supervisor"):
        request(tmp_path, {"op": "status"})


@pytest.mark.parametrize("counts", [{"orchestrators": 0}, {"orchestrators": "2"}, {"triton": True},
                                    {"orchestrators": -1}])
def test_scale_counts_must_be_positive_integers(tmp_path: Path, counts: dict) -> None:
    stack = Stack(Settings(run_dir=tmp_path))
    with pytest.raises(ValueError, match="must be a positive integer"):
        stack.handle_control({"op": "scale", **counts})


def test_unknown_requests_and_a_stack_that_is_not_running_are_refused(tmp_path: Path) -> None:
    stack = Stack(Settings(run_dir=tmp_path))
    with pytest.raises(ValueError, match="unknown request"):
        stack.handle_control({"op": "reboot"})
    with pytest.raises(RuntimeError, match="not running"):
        stack.handle_control({"op": "scale", "orchestrators": 2})
    with pytest.raises(RuntimeError, match="not running"):
        stack.handle_control({"op": "scale", "triton": 3})
