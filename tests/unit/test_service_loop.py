import asyncio

import uvloop

from services.common.service_main import _loop_factory


def test_services_run_on_uvloop_by_default(monkeypatch) -> None:
    monkeypatch.delenv("SLUICE_UVLOOP", raising=False)
    factory = _loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_sluice_uvloop_0_keeps_the_standard_loop(monkeypatch) -> None:
    monkeypatch.setenv("SLUICE_UVLOOP", "0")
    assert _loop_factory() is None
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        assert not isinstance(runner.get_loop(), uvloop.Loop)
