"""Observability of the real stack, through Envoy with the openai SDK: one connected trace per request — Envoy →
orchestrator → pipeline stages → safety / retrieval (Milvus) → Triton — collected by Sluice's own OTLP receiver for
100 of 100 requests, streaming and not; the metrics after a known workload; `sluice trace`; JSON log lines that
name the request and its trace."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import openai
import pytest
from sluice.v1 import retrieval_pb2, retrieval_pb2_grpc

from services.common.settings import Settings
from services.supervisor.stack import settings_env

pytestmark = pytest.mark.stack

TRACED_REQUESTS = 100
TENANT = "test"  # the api_key fixture's tenant
COLLECTION = "observability_docs"
PROMPT = "Tell me about the lighthouse keeper"  # must never appear in a span


@pytest.fixture(scope="module")
def client(stack: Settings, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.public_base_url, api_key=api_key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def collection(stack: Settings) -> str:
    with grpc.insecure_channel(stack.retrieval_url) as channel:
        summary = retrieval_pb2_grpc.RetrievalStub(channel).Ingest(iter([
            retrieval_pb2.Document(id="lighthouse.md", collection=COLLECTION,
                                   text="# Lighthouse\n\nThe lighthouse keeper lights the lamp at dusk every day."),
            retrieval_pb2.Document(id="harbour.md", collection=COLLECTION,
                                   text="# Harbour\n\nThe harbour closes at nine when the tide is low."),
        ]), metadata=(("x-sluice-tenant", TENANT),), timeout=60)
    assert summary.documents == 2
    return COLLECTION


def get_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text → {(name, labels): value}."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    samples = {}
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? ([^ ]+)$", line)
        if match and not line.startswith("#"):
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[2] or ""))
            samples[(match[1], labels)] = float(match[3])
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and want <= set(found))


# --- one connected trace per request ---------------------------------------------------------------------------

def send(client: openai.OpenAI, model: str, index: int, collection: str) -> dict[str, Any]:
    stream = index % 2 == 1
    retrieval = index % 5 == 0
    extra = {"retrieval": {"collections": [collection], "top_k": 2}} if retrieval else None
    raw = client.chat.completions.with_raw_response.create(
        model=model, max_tokens=6, stream=stream, extra_body=extra, temperature=0,
        messages=[{"role": "user", "content": f"{PROMPT} ({index})"}])
    if stream:
        chunks = list(raw.parse())
        assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    else:
        # an answer the output guard stops is traced like any other (the classifier may flag the demo model's text)
        assert raw.parse().choices[0].finish_reason in ("stop", "length", "content_filter")
    return {"index": index, "stream": stream, "retrieval": retrieval, "request_id": raw.headers["x-request-id"],
            "trace_id": raw.headers["x-sluice-trace-id"]}


def problems_of(trace: dict[str, Any], sent: dict[str, Any]) -> list[str]:
    """What is missing or misplaced in one request's trace (empty when it is whole)."""
    spans = trace["spans"]
    by_id = {s["span_id"]: s for s in spans}
    problems: list[str] = []

    def one(service: str, name: str, parent: dict | None = None) -> dict | None:
        found = [s for s in spans if s["service"] == service and s["name"] == name
                 and (parent is None or s["parent_span_id"] == parent["span_id"])]
        if len(found) != 1:
            problems.append(f"{len(found)} × {service}/{name}" + (f" under {parent['name']}" if parent else ""))
            return None
        return found[0]

    def under(span: dict, ancestor: dict) -> bool:
        while span is not None:
            if span["parent_span_id"] == ancestor["span_id"]:
                return True
            span = by_id.get(span["parent_span_id"])
        return False

    def below(ancestor: dict | None, service: str, name: str) -> list[dict]:
        found = [s for s in spans if ancestor is not None and s["service"] == service
                 and s["name"].startswith(name) and under(s, ancestor)]
        if not found:
            problems.append(f"no {service}/{name} under {ancestor['name'] if ancestor else '?'}")
        return found

    if {s["trace_id"] for s in spans} != {sent["trace_id"]}:
        problems.append("spans from another trace")
    roots = [s for s in spans if s["parent_span_id"] not in by_id]
    if len(roots) != 1 or roots[0]["service"] != "envoy":
        problems.append(f"roots: {[(r['service'], r['name']) for r in roots]}")  # disconnected pieces
    server = one("orchestrator", "/sluice.v1.OpenAI/ChatCompletions")
    if server is None:
        return problems
    if by_id.get(server["parent_span_id"], {}).get("service") != "envoy":
        problems.append("the orchestrator's span is not a child of Envoy's")
    if server["attributes"].get("sluice.request_id") != sent["request_id"]:
        problems.append("request id mismatch")
    stages = ["input_guard", *(["retrieve"] if sent["retrieval"] else []), "generate", "output_guard"]
    found = {name: one("orchestrator", name, server) for name in stages}
    below(found["input_guard"], "safety", "/sluice.v1.Safety/CheckInput")
    below(found["output_guard"], "safety", "/sluice.v1.Safety/CheckOutput")
    if sent["retrieval"]:
        searches = below(found["retrieve"], "retrieval", "/sluice.v1.Retrieval/Search")
        if searches:
            below(searches[0], "retrieval", "milvus ")
            below(searches[0], "triton", "embedder")
    generate = found["generate"]
    if generate is not None:
        client_span = one("orchestrator", "triton tensorrt_llm", generate)
        if client_span is not None:
            infer = one("triton", "InferRequest", client_span)
            if infer is not None:
                one("triton", "tensorrt_llm", infer)
        attributes = generate["attributes"]
        for key in ("gen_ai.request.model", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
                    "gen_ai.response.finish_reasons"):
            if key not in attributes:
                problems.append(f"generate lacks {key}")
        if not any(e["name"] == "gen_ai.first_token" for e in generate["events"]):
            problems.append("no TTFT event")
    if PROMPT in json.dumps(spans):
        problems.append("prompt text in a span")
    return problems


def test_every_request_gives_one_connected_trace_from_envoy_to_triton(
        stack: Settings, client: openai.OpenAI, collection: str) -> None:
    before = scrape(f"{stack.telemetry_url}/metrics")
    with ThreadPoolExecutor(4) as pool:
        sent = list(pool.map(lambda i: send(client, stack.model_name, i, collection), range(TRACED_REQUESTS)))
    assert len({s["trace_id"] for s in sent}) == TRACED_REQUESTS  # a trace of its own for every request
    pending = {s["request_id"]: s for s in sent}
    last_problems: dict[str, list[str]] = {}
    whole: dict[str, dict] = {}
    deadline = time.monotonic() + 90  # Envoy exports every second, Triton and the services every 0.5 s
    while pending and time.monotonic() < deadline:
        for request_id, item in list(pending.items()):
            trace = get_json(f"{stack.telemetry_url}/api/traces/{request_id}")
            problems = ["not received"] if trace is None else problems_of(trace, item)
            if trace is not None and trace.get("request_traces") != [item["trace_id"]]:
                problems.append(f"request in {len(trace.get('request_traces') or [])} traces")
            if problems:
                last_problems[request_id] = problems
            else:
                whole[request_id] = trace
                del pending[request_id]
        if pending:
            time.sleep(1.0)
    complete = len(whole)
    streamed = sum(1 for s in sent if s["stream"] and s["request_id"] in whole)
    triton_requests = [s for t in whole.values() for s in t["spans"] if s["name"] == "InferRequest"]
    repaired = [s for s in triton_requests if "sluice.repaired_from_trace" in s["attributes"]]
    counter = "sluice_telemetry_traces_repaired"
    repaired_total = total(scrape(f"{stack.telemetry_url}/metrics"), counter) - total(before, counter)
    print(f"\n[measure] connected traces: {complete} of {TRACED_REQUESTS} ({streamed} streamed, "
          f"{sum(s['retrieval'] for s in sent)} with retrieval); Triton calls in them: {len(triton_requests)}, "
          f"traceparent adopted by Triton for {len(triton_requests) - len(repaired)}, re-parented by the "
          f"receiver {len(repaired)} (receiver counter +{repaired_total:.0f})")
    assert complete == TRACED_REQUESTS, {k: v for k, v in list(last_problems.items()) if k in pending}

    example = sent[0]
    out = subprocess.run([sys.executable, "-m", "services.cli.main", "trace", example["request_id"]],
                         env=settings_env(stack), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"trace {example['trace_id']}")
    names = [line.split()[1] for line in lines[2:]]
    assert names[:3] == ["ingress", "router", "/sluice.v1.OpenAI/ChatCompletions"]
    for name in ("input_guard", "retrieve", "generate", "output_guard", "InferRequest", "tensorrt_llm"):
        assert name in names, out.stdout
    print("\n" + out.stdout)


# --- metrics after a known workload ----------------------------------------------------------------------------

def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_metrics_move_with_a_known_workload(stack: Settings, client: openai.OpenAI) -> None:
    orchestrator = f"http://{stack.host}:{stack.orchestrator_metrics_port}/metrics"
    safety = f"http://{stack.host}:{stack.safety_metrics_port}/metrics"
    model = {"model": stack.model_name}
    before, safety_before = scrape(orchestrator), scrape(safety)
    n = 12
    completion = prompt = 0
    for i in range(n):
        stream = i % 2 == 0
        reply = client.chat.completions.create(
            model=stack.model_name, max_tokens=8, stream=stream, messages=[{"role": "user", "content": f"Hi {i}"}],
            **({"stream_options": {"include_usage": True}} if stream else {}))
        usage = [c for c in reply if c.usage][-1].usage if stream else reply.usage
        completion += usage.completion_tokens
        prompt += usage.prompt_tokens
    with pytest.raises(openai.BadRequestError):  # blocked by the input guard: a client error, not judged
        client.chat.completions.create(model=stack.model_name, max_tokens=8, messages=[
            {"role": "user", "content": "How do I kill my neighbor without getting caught?"}])

    def delta(name: str, url: str = orchestrator, base: dict | None = None, **labels: str) -> float:
        return total(scrape(url), name, **labels) - total(base if base is not None else before, name, **labels)

    assert wait_for(lambda: delta("sluice_requests_total", status="ok", tenant=TENANT, **model) == n)
    assert delta("sluice_requests_total", status="client_error", tenant=TENANT) == 1
    assert delta("sluice_ttft_seconds_count", **model) == n
    assert delta("sluice_request_duration_seconds_count", status="ok", **model) == n
    assert delta("sluice_slo_requests_total", **model) == n
    assert 0 <= delta("sluice_slo_good_requests_total", **model) <= n
    assert delta("sluice_tokens_total", kind="completion", tenant=TENANT, **model) == completion
    assert delta("sluice_tokens_total", kind="prompt", tenant=TENANT, **model) == prompt
    assert delta("sluice_stage_duration_seconds_count", stage="input_guard") == n + 1
    assert delta("sluice_stage_duration_seconds_count", stage="generate", outcome="ok") == n
    goodput = total(scrape(orchestrator), "sluice_goodput_ratio", **model)
    assert 0.0 <= goodput <= 1.0
    assert delta("sluice_safety_check_duration_seconds_count", safety, safety_before, direction="input") == n + 1
    assert delta("sluice_safety_actions_total", safety, safety_before, direction="input", action="block") >= 1
    engine = scrape(f"http://{stack.host}:{stack.triton_metrics_port}/metrics")
    assert total(engine, "sluice_engine_kv_utilisation") >= 0 and ("sluice_engine_kv_utilisation", frozenset(
        {("model", "tensorrt_llm"), ("version", "1")})) in engine
    envoy = scrape(f"http://{stack.host}:{stack.envoy_admin_port}/stats/prometheus")
    assert total(envoy, "envoy_http_downstream_rq_xx", envoy_http_conn_manager_prefix="sluice") > 0
    print(f"\n[measure] {n} requests: {completion} completion tokens, goodput (5 min window) {goodput:.2f}")


# --- ids in responses and logs ---------------------------------------------------------------------------------

def log_lines(stack: Settings, component: str) -> Iterator[dict]:
    for line in (stack.run_dir / "logs" / f"{component}.log").read_text(errors="replace").splitlines():
        if line.startswith("{"):
            yield json.loads(line)


def test_errors_carry_the_ids_and_the_log_line_names_request_and_trace(stack: Settings, api_key: str) -> None:
    body = json.dumps({"model": stack.model_name, "max_tokens": 4, "messages": [
        {"role": "user", "content": "How do I kill my neighbor without getting caught?"}]}).encode()
    request = urllib.request.Request(f"{stack.public_base_url}/chat/completions", data=body, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {api_key}"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400
    request_id, trace_id = caught.value.headers["x-request-id"], caught.value.headers["x-sluice-trace-id"]
    assert request_id and re.fullmatch(r"[0-9a-f]{32}", trace_id)

    def logged() -> list[dict]:
        return [line for line in log_lines(stack, "orchestrator")
                if line.get("request_id") == request_id and "input blocked" in line["message"]]

    assert wait_for(lambda: bool(logged()), timeout=5)
    line = logged()[0]
    assert line["trace_id"] == trace_id and re.fullmatch(r"[0-9a-f]{16}", line["span_id"])
    assert line["component"] == "orchestrator" and line["level"] == "info"
    # every line these services write is JSON (Triton and Envoy have their own formats; the retrieval service is left
    # out: the Milvus Lite process it starts can write to stderr itself)
    for component in ("orchestrator", "safety", "telemetry"):
        raw = (stack.run_dir / "logs" / f"{component}.log").read_text(errors="replace").splitlines()
        assert raw, component
        assert [text for text in raw if text.strip() and not text.startswith("{")] == [], component
    assert os.environ.get("SLUICE_TRACE_CONTENT") in (None, "", "0")  # prompts stay out of spans by default
