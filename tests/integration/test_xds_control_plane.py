"""The xDS control plane against the real Envoy: Envoy starts from a bootstrap that names only the control plane, gets
listeners, routes, clusters and endpoints over ADS, ACKs them, and keeps serving on the last good configuration when
an update is refused (NACK)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from services.control_plane import xds_api
from services.control_plane.edge import EdgeControlPlane
from services.control_plane.resources import Endpoint
from services.supervisor.envoy_config import render_envoy_yaml
from tests.integration.test_envoy_config import (  # noqa: F401  (module fixtures: generated stubs, stand-in server)
    FRAMES,
    _free_port,
    _running_envoy,
    generated,
    orchestrator,
)

pytestmark = pytest.mark.timeout(60)


def _stream_frames(listen_port: int) -> list[str]:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", f"http://127.0.0.1:{listen_port}/v1/chat/completions", json=body, timeout=10) as reply:
        assert reply.status_code == 200, reply.read()
        return [line for line in reply.iter_lines() if line.startswith("data: ")]


def _listener_version(admin_port: int) -> str:
    dump = httpx.get(f"http://127.0.0.1:{admin_port}/config_dump?resource=dynamic_listeners", timeout=5).json()
    (listener,) = dump["configs"]
    return listener["active_state"]["version_info"]


@pytest.fixture
def edge(tmp_path: Path, generated: SimpleNamespace, orchestrator: SimpleNamespace):  # noqa: F811
    listen_port, admin_port = _free_port(), _free_port()
    lua_error = {"broken": False}

    def render() -> str:
        text = render_envoy_yaml(listen_port=listen_port, admin_port=admin_port, orchestrator_port=orchestrator.port,
                                 descriptor_path=generated.descriptor)
        # An invalid update on demand: a Lua filter that does not compile (Envoy refuses the listener).
        return text.replace("inline_string: |\n", "inline_string: |\n                  this is not Lua (\n", 1) \
            if lua_error["broken"] else text

    control = EdgeControlPlane(render).start()
    control.set_orchestrators([Endpoint("127.0.0.1", orchestrator.port)])
    bootstrap = control.write_bootstrap(tmp_path / "envoy.yaml")
    with _running_envoy(bootstrap, admin_port, tmp_path / "envoy.log") as envoy:
        yield SimpleNamespace(control=control, listen_port=listen_port, admin_port=admin_port, envoy=envoy,
                              break_lua=lambda on: lua_error.update(broken=on), bootstrap=bootstrap)
    control.stop()


def test_envoy_runs_on_what_the_control_plane_serves(edge: SimpleNamespace) -> None:
    static = edge.bootstrap.read_text()
    assert "listeners" not in static and "orchestrator" not in static  # only the control plane's cluster
    assert len(_stream_frames(edge.listen_port)) == FRAMES
    served = edge.control.store.versions()
    assert edge.control.store.wait_for_ack(xds_api.LISTENER_TYPE, served[xds_api.LISTENER_TYPE], 5)
    (acked,) = edge.control.store.acked().values()
    assert acked == served  # clusters, endpoints, listener and routes: all four ACKed at the served versions
    clusters = httpx.get(f"http://127.0.0.1:{edge.admin_port}/clusters?format=json", timeout=5).json()
    members = next(c for c in clusters["cluster_statuses"] if c["name"] == "orchestrator")["host_statuses"]
    assert len(members) == 1


def test_a_refused_update_leaves_traffic_on_the_last_good_configuration(edge: SimpleNamespace) -> None:
    store = edge.control.store
    good = store.versions()[xds_api.LISTENER_TYPE]
    assert store.wait_for_ack(xds_api.LISTENER_TYPE, good, 5)
    edge.break_lua(True)
    bad = edge.control.set_orchestrators(edge.control.orchestrators)[xds_api.LISTENER_TYPE]
    assert bad != good
    deadline = time.monotonic() + 10
    while not store.rejections and time.monotonic() < deadline:
        time.sleep(0.05)
    (rejection,) = store.rejections
    assert rejection.type_url == xds_api.LISTENER_TYPE and rejection.version == bad
    assert "lua" in rejection.reason.lower() or "script" in rejection.reason.lower(), rejection.reason
    # Envoy still runs the old listener, the control plane serves it again, and requests flow as before.
    assert _listener_version(edge.admin_port) == good
    assert store.versions()[xds_api.LISTENER_TYPE] == good
    assert (next(iter(store.acked().values())))[xds_api.LISTENER_TYPE] == good
    for _ in range(3):
        assert len(_stream_frames(edge.listen_port)) == FRAMES
    # A valid update after the refused one is taken.
    edge.break_lua(False)
    edge.control.render = _with_rate_limit(edge.control.render)
    fixed = edge.control.set_orchestrators(edge.control.orchestrators)[xds_api.LISTENER_TYPE]
    assert fixed not in (good, bad)
    assert store.wait_for_ack(xds_api.LISTENER_TYPE, fixed, 10)
    # (Envoy applies a change inside the filter chain in place and keeps the listener's version_info; the content
    # is what shows the update.)
    dump = httpx.get(f"http://127.0.0.1:{edge.admin_port}/config_dump?resource=dynamic_listeners", timeout=5).text
    assert '"max_tokens": 999' in dump
    assert len(_stream_frames(edge.listen_port)) == FRAMES
    assert json.dumps(edge.control.status())  # what `sluice status` shows is plain JSON


def _with_rate_limit(render):
    """The same template with a different local rate limit: a real change to the listener."""
    return lambda: render().replace("max_tokens: 1000", "max_tokens: 999", 1)
