"""`sluice scale` on a running stack: 6 clients stream while the orchestrators go 1 -> 2 -> 1, then Triton 1 -> 2 -> 1.
No request fails, Envoy's /clusters lists two orchestrator endpoints in between (and the new one takes requests), the
new Triton replica serves LLM requests, and Envoy is the same process before and after: only its xDS configuration
changed."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from services.orchestrator.tenancy.store import issue_key
from services.supervisor.processes import pid_alive
from services.supervisor.stack import STATE_FILE, down, scale, status, up
from tests.conftest import stack_settings

pytestmark = pytest.mark.timeout(300)
CLIENTS = 6


@dataclass
class Client:
    done: int = 0
    failures: list[str] = field(default_factory=list)


def _stream_until(stop: threading.Event, url: str, key: str, model: str, client: Client) -> None:
    body = {"model": model, "stream": True, "max_tokens": 24, "temperature": 0,
            "messages": [{"role": "user", "content": "Tell me a story."}]}
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {key}"}) as http:
        while not stop.is_set():
            try:
                with http.stream("POST", f"{url}/chat/completions", json=body) as reply:
                    lines = [line for line in reply.iter_lines() if line.startswith("data: ")]
                    if reply.status_code != 200 or lines[-1:] != ["data: [DONE]"]:
                        client.failures.append(f"{reply.status_code}: {lines[-2:]}")
                    else:
                        client.done += 1
            except httpx.HTTPError as error:
                client.failures.append(repr(error))


def _orchestrator_hosts(admin: str) -> dict[str, int]:
    """Envoy's orchestrator cluster members: address -> requests it has sent there."""
    clusters = httpx.get(f"{admin}/clusters?format=json", timeout=5).json()["cluster_statuses"]
    members = next(c for c in clusters if c["name"] == "orchestrator").get("host_statuses", [])
    return {f"{h['address']['socket_address']['address']}:{h['address']['socket_address']['port_value']}":
            next((int(s.get("value", 0)) for s in h["stats"] if s["name"] == "rq_total"), 0) for h in members}


def _replica_up(host: str, metrics_port: int) -> dict[str, float]:
    """The orchestrator's view of the Triton replicas: replica -> 1 while routable (its Prometheus gauge)."""
    text = httpx.get(f"http://{host}:{metrics_port}/metrics", timeout=5).text
    return {line.split('replica="', 1)[1].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith("sluice_triton_replica_up{")}


def _envoy_pid(run_dir: Path) -> int:
    return json.loads((run_dir / STATE_FILE).read_text())["processes"]["envoy"]


def test_scale_orchestrators_up_and_down_under_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = stack_settings(tmp_path)
    assert up(detach=True, settings=settings) == 0
    admin = f"http://{settings.host}:{settings.envoy_admin_port}"
    stop = threading.Event()
    clients = [Client() for _ in range(CLIENTS)]
    threads: list[threading.Thread] = []
    try:
        envoy_pid = _envoy_pid(tmp_path)
        key = issue_key(settings.db_url, "scale", tier="enterprise", name="scale-test")
        threads = [threading.Thread(target=_stream_until, args=(stop, settings.public_base_url, key,
                                                                settings.model_name, c)) for c in clients]
        for thread in threads:
            thread.start()
        time.sleep(2)
        began = time.monotonic()
        assert scale(orchestrators=2, triton=None, settings=settings) == 0
        hosts = _orchestrator_hosts(admin)
        assert len(hosts) == 2, hosts
        new = next(h for h in hosts if not h.endswith(f":{settings.orchestrator_port}"))
        while _orchestrator_hosts(admin).get(new, 0) == 0 and time.monotonic() - began < 30:
            time.sleep(0.05)
        taking_traffic = time.monotonic() - began
        assert _orchestrator_hosts(admin)[new] > 0, "the new orchestrator got no request"
        capsys.readouterr()
        assert status(settings, as_json=True) == 0
        report = json.loads(capsys.readouterr().out)
        assert "orchestrator-1" in report["processes"] and report["processes"]["orchestrator-1"]["ready"]
        (acked,) = report["xds"]["acked"].values()
        assert acked == report["xds"]["served"]  # Envoy runs what the control plane serves
        time.sleep(3)
        assert scale(orchestrators=1, triton=None, settings=settings) == 0
        assert list(_orchestrator_hosts(admin)) == [f"{settings.host}:{settings.orchestrator_port}"]
        # Triton 1 -> 2 -> 1: the orchestrator is rolled onto each new replica set, still without a failed request.
        triton_began = time.monotonic()
        assert scale(orchestrators=None, triton=2, settings=settings) == 0
        triton_scaled = time.monotonic() - triton_began
        replica_1 = f"{settings.host}:{settings.triton_replica_ports(1)[1]}"
        (orchestrator,) = json.loads((tmp_path / STATE_FILE).read_text())["orchestrators"]
        assert orchestrator["port"] != settings.orchestrator_port  # rolled: a new process on the new replica set
        # The rolled orchestrator routes across both replicas: replica 1 is known to it and routable.
        deadline = time.monotonic() + 10
        while _replica_up(settings.host, orchestrator["metrics_port"]).get(replica_1) != 1.0:
            assert time.monotonic() < deadline, _replica_up(settings.host, orchestrator["metrics_port"])
            time.sleep(0.2)
        capsys.readouterr()
        assert status(settings, as_json=True) == 0
        assert json.loads(capsys.readouterr().out)["processes"]["triton-1"]["ready"]
        assert scale(orchestrators=None, triton=1, settings=settings) == 0
        assert "triton-1" not in json.loads((tmp_path / STATE_FILE).read_text())["processes"]
        assert len(_orchestrator_hosts(admin)) == 1
        time.sleep(2)
        stop.set()
        for thread in threads:
            thread.join(60)
        assert _envoy_pid(tmp_path) == envoy_pid and pid_alive(envoy_pid)  # never restarted
    finally:
        stop.set()
        down(settings)
    assert all(c.done > 0 for c in clients), [c.done for c in clients]
    assert [f for c in clients for f in c.failures] == []
    with capsys.disabled():
        print(f"\nscale 1 -> 2: the new orchestrator took its first request {taking_traffic:.2f} s after "
              f"`sluice scale`; Triton 1 -> 2 took {triton_scaled:.1f} s (replica ready, orchestrator rolled); "
              f"requests completed per client: {[c.done for c in clients]}")
