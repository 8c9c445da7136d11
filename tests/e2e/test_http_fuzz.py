"""Fuzzing the HTTP facade through the real Envoy → orchestrator → Triton stack.

Thousands of malformed, oversized, wrongly typed and boundary requests, from two sources:
- schemathesis, driven by the facade's OpenAPI description (envoy/openapi.yaml): schema-valid and schema-violating
  requests for every operation;
- hypothesis strategies written here: one field of a valid body replaced by an arbitrary JSON value or a boundary
  value read from the same description, raw byte bodies (broken, truncated, deeply nested, non-UTF-8, NaN), unknown
  URLs and methods, odd query strings and percent-escapes.
Every reply must be a valid 2xx or an OpenAI-shaped 4xx — never a 5xx, never a connection left hanging (the client
times out). Valid generations are kept to a few tokens so the whole run stays within about a minute.
SLUICE_FUZZ_SCALE=10 runs ten times as many cases; SLUICE_FUZZ_RANDOM=1 draws new ones instead of the fixed seed.
"""

from __future__ import annotations

import copy
import json
import os
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from services.common.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.timeout(600)

SPEC = yaml.safe_load((REPO_ROOT / "envoy" / "openapi.yaml").read_text())
SCALE = float(os.environ.get("SLUICE_FUZZ_SCALE", "1"))
TIMEOUT = (5.0, 30.0)  # (connect, read) seconds: a reply slower than this is a hung connection
FUZZ_MAX_TOKENS = 3  # valid generations stay tiny
MAX_REQUEST_BYTES = 4 * 1024 * 1024  # Envoy's body limit (services/supervisor/envoy_config.py)
CHAT_MODELS = ["sluice-demo", "sluice-small", "sluice", "auto"]
CHAT = SPEC["components"]["schemas"]["ChatCompletionRequest"]
EMBEDDINGS = SPEC["components"]["schemas"]["EmbeddingsRequest"]
VALID_CHAT = {"model": "sluice-demo", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": FUZZ_MAX_TOKENS}
VALID_EMBEDDINGS = {"model": "all-MiniLM-L6-v2", "input": "Hi"}


def examples(n: int) -> settings:
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, database=None,
                    derandomize=os.environ.get("SLUICE_FUZZ_RANDOM") != "1",
                    suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])


def fuzz_spec() -> dict[str, Any]:
    """The description with the few changes that keep generation cheap: valid requests name a served model and ask
    for at most FUZZ_MAX_TOKENS tokens (always set, so none falls back to the 256-token default)."""
    spec = copy.deepcopy(SPEC)
    chat = spec["components"]["schemas"]["ChatCompletionRequest"]
    chat["properties"]["model"] = {"type": "string", "enum": CHAT_MODELS}
    chat["properties"]["persona"]["enum"] = ["concise"]
    for name in ("max_tokens", "max_completion_tokens", "min_tokens"):
        chat["properties"][name]["maximum"] = FUZZ_MAX_TOKENS
    chat["required"] = [*chat["required"], "max_tokens"]
    return spec


SCHEMA = schemathesis.openapi.from_dict(fuzz_spec())


# --- judging replies -------------------------------------------------------------------------------------------------

def openai_error_problem(body: Any) -> str | None:
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return f"not an OpenAI error object: {str(body)[:200]}"
    error = body["error"]
    if set(error) != {"message", "type", "param", "code"}:
        return f"error keys are {sorted(error)}"
    if not isinstance(error["message"], str) or not error["message"] or not isinstance(error["type"], str):
        return f"error message/type are not strings: {error}"
    if not all(error[k] is None or isinstance(error[k], str) for k in ("param", "code")):
        return f"error param/code are neither null nor strings: {error}"
    return None


def sse_problem(text: str) -> str | None:
    frames = [line[len("data: "):] for line in text.split("\n") if line.startswith("data: ")]
    if not frames:
        return "an event stream without data frames"
    for frame in frames[:-1]:
        payload = json.loads(frame)
        if "error" in payload:
            return openai_error_problem(payload) or (
                None if payload["error"]["type"] != "server_error" else f"mid-stream server error: {payload}")
        if payload.get("object") != "chat.completion.chunk":
            return f"not a chunk: {frame[:200]}"
    if frames[-1] != "[DONE]":
        last = json.loads(frames[-1])
        return openai_error_problem(last) or (None if last["error"]["type"] != "server_error"
                                              else f"stream ended with a server error: {last}")
    return None


def success_problem(path: str, response: requests.Response, token_limit: int | None) -> str | None:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return sse_problem(response.text) if path.endswith("/chat/completions") else "an unexpected event stream"
    body = response.json()
    expected = {"/v1/chat/completions": "chat.completion", "/v1/embeddings": "list", "/v1/models": "list",
                "/v1/vector_stores": "vector_store", "/v1/vector_stores/{vector_store_id}": "vector_store"}
    wanted = expected.get(path.rstrip("/"), "model")  # the transcoder matches a trailing slash too
    if body.get("object") != wanted:
        return f"200 with object {body.get('object')!r}, expected {wanted!r}"
    if wanted == "chat.completion" and token_limit is not None and body["usage"]["completion_tokens"] > token_limit:
        return f"generated {body['usage']['completion_tokens']} tokens, more than max_tokens {token_limit}"
    return None


def problem_with(path: str, response: requests.Response, token_limit: int | None = None) -> str | None:
    """None when the reply is a valid 2xx or an OpenAI-shaped 4xx."""
    status = response.status_code
    try:
        if 200 <= status < 300:
            return success_problem(path, response, token_limit)
        if 400 <= status < 500:
            if status == 429 and "retry-after" not in response.headers:
                return "429 without Retry-After"
            return openai_error_problem(response.json())
    except (ValueError, KeyError, TypeError) as exc:
        return f"{status} with a malformed body ({type(exc).__name__}: {exc}): {response.text[:200]!r}"
    return f"status {status}: {response.text[:300]!r}"


@dataclass
class Tally:
    """What the fuzzer saw. Problems are collected (not raised) so one run reports every kind of failure."""

    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def record(self, label: str, path: str, send: Callable[[], requests.Response],
               token_limit: int | None = None) -> None:
        try:
            response = send()
        except requests.Timeout:
            self.statuses[-1] += 1
            self.problems.append(f"{label}: no reply within {TIMEOUT[1]} s (hung connection)")
            return
        except requests.ConnectionError as exc:
            self.statuses[-2] += 1
            self.problems.append(f"{label}: connection failed: {exc}")
            return
        self.statuses[response.status_code] += 1
        problem = problem_with(path, response, token_limit)
        if problem:
            self.problems.append(f"{label}: {problem}")

    def check(self, minimum_cases: int) -> None:
        cases = sum(self.statuses.values())
        print(f"\n{cases} requests, statuses {dict(sorted(self.statuses.items()))}")
        assert not self.problems, f"{len(self.problems)} bad replies, e.g.:\n" + "\n".join(self.problems[:8])
        assert cases >= minimum_cases


@pytest.fixture(scope="module")
def fuzz_key(tenant_keys: Callable[..., str]) -> str:
    """Its own tenant, so the fuzzer's traffic and other tests' rate limits never meet."""
    return tenant_keys("fuzz", "enterprise")


@pytest.fixture(scope="module")
def session(stack: Settings) -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


def base_url(stack: Settings) -> str:
    return f"http://{stack.host}:{stack.http_port}"


def token_limit(body: Any) -> int | None:
    """The most completion tokens a 200 may report for `body`: FUZZ_MAX_TOKENS, unless tools are involved (a forced
    call's prefill counts as output, and server-tool rounds add up)."""
    if not isinstance(body, dict) or any(body.get(k) is not None for k in ("tools", "server_tools", "tool_choice")):
        return None
    return FUZZ_MAX_TOKENS


def cap_generation(body: Any) -> Any:
    """Schema-violating bodies may still be ones the server accepts (it ignores `metadata`): keep any generation
    tiny without repairing the violation — only in-range token counts are lowered, and a missing one is added.
    And `stream_options`, which the description cannot tie to `stream: true`, comes with streaming switched on
    where `stream` was left unset or false."""
    if isinstance(body, dict):
        for name in ("max_tokens", "max_completion_tokens", "min_tokens"):
            value = body.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and FUZZ_MAX_TOKENS < value <= 1 << 20:
                body[name] = FUZZ_MAX_TOKENS
        if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
            body["max_tokens"] = FUZZ_MAX_TOKENS  # (null is valid too: it would mean the 256-token default)
        if body.get("stream_options") is not None and body.get("stream") in (None, False):
            body["stream"] = True
    return body


# --- schema-driven: schemathesis -------------------------------------------------------------------------------------

OPERATIONS = [  # (path, method, positive cases, negative cases): a GET has nothing to violate but its URL and
    ("/v1/chat/completions", "POST", 120, 300),  # headers, which test_urls_methods_and_queries_* covers
    ("/v1/embeddings", "POST", 80, 250),
    ("/v1/models/{model}", "GET", 120, 0),
    ("/v1/models", "GET", 20, 0),
    ("/v1/vector_stores", "POST", 40, 80),  # collection names: created (idempotent) or refused, never a 5xx
    ("/v1/vector_stores/{vector_store_id}", "GET", 40, 0),
]


@pytest.mark.parametrize(("path", "method", "positive", "negative"), OPERATIONS,
                         ids=[f"{m} {p}" for p, m, _, _ in OPERATIONS])
def test_schema_driven_requests_get_2xx_or_openai_4xx(stack: Settings, fuzz_key: str, session: requests.Session,
                                                      path: str, method: str, positive: int, negative: int) -> None:
    operation = SCHEMA[path][method]
    tally = Tally()
    auth = {"Authorization": f"Bearer {fuzz_key}"}

    def run(mode: GenerationMode, count: int, headers: dict[str, str] | None) -> None:
        @examples(count)
        @given(operation.as_strategy(mode, headers=headers))
        def fuzz(case: schemathesis.Case) -> None:
            if path.endswith("completions"):
                case.body = cap_generation(case.body)
            kwargs = case.as_transport_kwargs(base_url=base_url(stack))
            label = f"{mode.value} {case.method} {case.formatted_path} {json.dumps(case.body, default=repr)}"
            tally.record(label[:1500], path,
                         lambda: session.request(**kwargs, timeout=TIMEOUT), token_limit(case.body))

        fuzz()

    run(GenerationMode.POSITIVE, positive, auth)
    if negative:
        run(GenerationMode.NEGATIVE, negative, auth)
    run(GenerationMode.POSITIVE, max(positive // 8, 5), None)  # generated (wrong) API keys: 401s
    tally.check(minimum_cases=positive + negative if method == "POST" else 1)  # a bare GET has few variants
    if method == "POST" and SCALE >= 1:
        assert any(200 <= s < 300 for s in tally.statuses), f"no request was valid: {tally.statuses}"


# --- hand-written strategies: one bad field, raw bytes, URLs ---------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63 - 2, max_value=2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
                | st.sampled_from(["", "\ud800", "\udfff x", "\x00", "a" * 5000, "user", "text", "function", "auto"]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=12)


def boundary_values(schema: dict[str, Any]) -> list[Any]:
    """The edges of a property as the description states them, and one step past each."""
    values: list[Any] = [None, True, "1", [], {}]
    step = 1 if schema.get("type") == "integer" else 0.001
    for key, sign in (("minimum", -1), ("maximum", 1)):
        if key in schema:
            values += [schema[key], schema[key] + sign * step]
    if schema.get("type") == "integer":
        values += [1.5, 2**63, -(2**63) - 1, 10**30]
    for key in ("minLength", "maxItems", "minItems"):
        if key in schema:
            values.append("" if key == "minLength" else ["x"] * (schema[key] + 1 if key == "maxItems" else 0))
    values += list(schema.get("enum", []))
    return values


def one_bad_field(valid: dict[str, Any], request_schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    names = sorted(request_schema["properties"])

    def build(name: str, value: Any, drop: str | None) -> dict[str, Any]:
        body = {**copy.deepcopy(valid), name: value}
        if drop is not None:
            body.pop(drop, None)
        return cap_generation(body)

    field_values = st.sampled_from(names).flatmap(lambda name: st.tuples(
        st.just(name), json_values | st.sampled_from(boundary_values(request_schema["properties"][name]))))
    unknown = st.tuples(st.text(min_size=1, max_size=20).filter(lambda n: n not in names), json_values)
    return st.builds(lambda pair, drop: build(pair[0], pair[1], drop), field_values | unknown,
                     st.none() | st.sampled_from(request_schema["required"]))


def encode(body: Any) -> bytes:
    # allow_nan: NaN and Infinity go out as the bare tokens, which are not JSON; lone surrogates go out escaped.
    return json.dumps(body, allow_nan=True).encode()


raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.sampled_from([b"", b"{", b"}", b"null", b"[]", b"\"x\"", b"0", b"{\"model\": }", b"\xef\xbb\xbf{}",
                     b"{\"model\": 1e999999}", b"{\"a\":" * 200 + b"1" + b"}" * 200, b"[" * 5000 + b"]" * 5000,
                     b"{\"x\": [" + b"[" * 70 + b"]" * 70 + b"]}", "{\"model\": \"é\"}".encode("utf-16"),
                     b"{\"model\": \"\\ud800\"}", b"{\"max_tokens\": NaN}", b"\x00" * 1000]),
    st.builds(lambda body, cut: encode(body)[:cut], st.just(VALID_CHAT), st.integers(1, 60)),
)


@pytest.mark.parametrize("route", ["chat", "embeddings"])
def test_one_bad_field_gets_2xx_or_openai_4xx(stack: Settings, fuzz_key: str, session: requests.Session,
                                              route: str) -> None:
    path, valid, schema, count = (("/v1/chat/completions", VALID_CHAT, CHAT, 700) if route == "chat"
                                  else ("/v1/embeddings", VALID_EMBEDDINGS, EMBEDDINGS, 300))
    tally = Tally()
    headers = {"Authorization": f"Bearer {fuzz_key}", "Content-Type": "application/json"}

    @examples(count)
    @given(body=one_bad_field(valid, schema))
    def fuzz(body: dict[str, Any]) -> None:
        data = encode(body)
        tally.record(f"{path} {data[:300]!r}", path,
                     lambda: session.post(base_url(stack) + path, data=data, headers=headers, timeout=TIMEOUT),
                     token_limit(body))

    fuzz()
    tally.check(minimum_cases=count)


def test_raw_bodies_get_openai_400(stack: Settings, fuzz_key: str, session: requests.Session) -> None:
    tally = Tally()
    content_types = st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", None])

    @examples(400)
    @given(data=raw_bodies, path=st.sampled_from(["/v1/chat/completions", "/v1/embeddings"]), ctype=content_types)
    # regressions, each once a 500: nesting past the decoder's recursion limit, lone surrogates (in an echoed model
    # name, in text for the tokenizer or the embedder)
    @example(data=b"[" * 5000 + b"]" * 5000, path="/v1/chat/completions", ctype="application/json")
    @example(data=b'{"model": "\\ud800", "messages": []}', path="/v1/chat/completions", ctype="application/json")
    @example(data=b'{"model": "sluice-demo", "messages": [{"role": "user", "content": "\\udfff"}]}',
             path="/v1/chat/completions", ctype="application/json")
    @example(data=b'{"model": "all-MiniLM-L6-v2", "input": "\\ud800"}', path="/v1/embeddings", ctype=None)
    def fuzz(data: bytes, path: str, ctype: str | None) -> None:
        headers = {"Authorization": f"Bearer {fuzz_key}", **({"Content-Type": ctype} if ctype else {})}
        tally.record(f"{path} {ctype} {data[:200]!r}", path,
                     lambda: session.post(base_url(stack) + path, data=data, headers=headers, timeout=TIMEOUT))

    fuzz()
    tally.check(minimum_cases=400)
    assert not any(200 <= s < 300 for s in tally.statuses), "a body that is no JSON object was accepted"


url_parts = st.text(st.characters(codec="utf-8"), max_size=12).map(
    lambda s: requests.utils.quote(s, safe="")) | st.sampled_from(
    ["%FF", "%ED%A0%80", "%C0%AF", "%F4%90%80%80", "%E2%82", "%00", "..%2F..", "%2F", "%", "%zz", "a%20b"])


def test_urls_methods_and_queries_get_openai_errors(stack: Settings, fuzz_key: str,
                                                    session: requests.Session) -> None:
    tally = Tally()
    headers = {"Authorization": f"Bearer {fuzz_key}"}

    @examples(300)
    @given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
           prefix=st.sampled_from(["/v1/models/", "/v1/models", "/v1/", "/v1/chat/", "/", "/v1/embeddings/"]),
           tail=url_parts, query=st.none() | st.tuples(url_parts, url_parts))
    # regressions: invalid UTF-8 bound into the proto's `model` field (a 500), an unknown query parameter (the
    # transcoder passed the request through untranscoded: a 503)
    @example(method="GET", prefix="/v1/models/", tail="%FF", query=None)
    @example(method="GET", prefix="/v1/models/", tail="sluice-demo", query=("model", "%ED%A0%80"))
    @example(method="GET", prefix="/v1/models", tail="", query=("x", "1"))
    def fuzz(method: str, prefix: str, tail: str, query: tuple[str, str] | None) -> None:
        url = base_url(stack) + prefix + tail + (f"?{query[0]}={query[1]}" if query else "")
        request = requests.Request(method, url, headers=headers, data=b"{}" if method != "GET" else None).prepare()
        request.url = url  # as generated: requests would re-quote the escapes
        tally.record(f"{method} {url}", prefix + tail, lambda: session.send(request, timeout=TIMEOUT))

    fuzz()
    tally.check(minimum_cases=300)


# --- boundaries, stated exactly ---------------------------------------------------------------------------------------

NUMERIC = sorted(name for name, prop in CHAT["properties"].items() if "minimum" in prop or "maximum" in prop)


@pytest.mark.parametrize("name", NUMERIC)
def test_numeric_bounds_are_exact_at_the_edge(stack: Settings, fuzz_key: str, session: requests.Session,
                                              name: str) -> None:
    """The bounds of envoy/openapi.yaml, through Envoy: each edge is accepted, one step past it is a 400 naming the
    parameter."""
    prop = CHAT["properties"][name]
    step = 1 if prop["type"] == "integer" else 0.001
    headers = {"Authorization": f"Bearer {fuzz_key}"}
    capped = name in ("max_tokens", "max_completion_tokens", "min_tokens")
    for key, sign in (("minimum", -1), ("maximum", 1)):
        if key not in prop:
            continue
        edge = min(prop[key], FUZZ_MAX_TOKENS) if capped and key == "maximum" else prop[key]
        needs = {"logprobs": True} if name == "top_logprobs" else {}  # top_logprobs needs logprobs
        body = {**VALID_CHAT, **needs, name: edge}
        if name == "min_tokens":
            body["max_tokens"] = max(edge, 1)
        reply = session.post(base_url(stack) + "/v1/chat/completions", json=body, headers=headers, timeout=TIMEOUT)
        assert reply.status_code == 200, (name, edge, reply.text[:300])
        past = prop[key] + sign * step
        reply = session.post(base_url(stack) + "/v1/chat/completions", json={**VALID_CHAT, **needs, name: past},
                             headers=headers, timeout=TIMEOUT)
        assert reply.status_code == 400, (name, past, reply.text[:300])
        assert reply.json()["error"]["param"] == name


# --- size limits at Envoy ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings"])
def test_bodies_over_the_limit_are_413_in_openai_shape(stack: Settings, fuzz_key: str, session: requests.Session,
                                                       path: str) -> None:
    headers = {"Authorization": f"Bearer {fuzz_key}", "Content-Type": "application/json"}
    padding = MAX_REQUEST_BYTES - len(encode({**VALID_CHAT, "user": ""}))
    at_limit = encode({**VALID_CHAT, "user": "u" * padding})
    assert len(at_limit) == MAX_REQUEST_BYTES
    over = at_limit[:-1] + b" }"  # one byte more, still valid JSON
    reply = session.post(base_url(stack) + path, data=at_limit, headers=headers, timeout=TIMEOUT)
    assert reply.status_code != 413 and reply.status_code < 500, reply.text[:300]  # through Envoy to the parser
    for data in (over, iter([over[:1 << 20], over[1 << 20:]])):  # with Content-Length, and chunked
        reply = session.post(base_url(stack) + path, data=data, headers=headers, timeout=TIMEOUT)
        assert reply.status_code == 413
        assert openai_error_problem(reply.json()) is None
        assert reply.json()["error"]["code"] == "request_too_large"


def test_oversized_headers_are_431_not_a_retryable_429(stack: Settings, session: requests.Session) -> None:
    reply = session.get(base_url(stack) + "/v1/models", headers={"Authorization": "Bearer " + "k" * 20_000},
                        timeout=TIMEOUT)
    assert reply.status_code == 431
    assert openai_error_problem(reply.json()) is None


def test_broken_http_framing_is_answered_not_hung(stack: Settings) -> None:
    """Requests no HTTP library would send, written to the socket: each gets a 4xx (or a closed connection), and
    none is left without an answer."""
    raw = [b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
           b"GET /v1/mo\x01dels HTTP/1.1\r\nHost: x\r\n\r\n",
           b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
           b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
           b"BREW /v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
           b"GET /v1/models HTTP/9.9\r\nHost: x\r\n\r\n"]
    for request in raw:
        with socket.create_connection((stack.host, stack.http_port), timeout=TIMEOUT[1]) as sock:
            sock.sendall(request)
            reply = sock.recv(4096)
        assert reply == b"" or reply.startswith(b"HTTP/1.1 4"), (request, reply[:200])
