"""envoy/openapi.yaml against its sources: the routes of protos/sluice/v1/openai.proto and the orchestrator's request
parsers. The description is written by hand (the protos carry opaque HttpBody), so these tests are what keep it
true: same routes, same fields, same enumerations, and every numeric bound exactly the parser's."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from services.common.errors import ApiError
from services.common.settings import REPO_ROOT
from services.orchestrator import chat_request, completions_api, embeddings, responses_api
from services.orchestrator.ingestion.vector_stores import PURPOSES
from services.orchestrator.tools import spec as tool_spec
from services.orchestrator.tools.registry import builtin_registry
from services.retrieval.collection_names import NAME_PATTERN

SPEC = yaml.safe_load((REPO_ROOT / "envoy" / "openapi.yaml").read_text())
SCHEMAS = SPEC["components"]["schemas"]
CHAT = SCHEMAS["ChatCompletionRequest"]["properties"]
EMBEDDINGS = SCHEMAS["EmbeddingsRequest"]["properties"]
VALID_CHAT: dict[str, Any] = {"model": "sluice-demo", "messages": [{"role": "user", "content": "hi"}]}


# The services Envoy transcodes (envoy/envoy.yaml.tmpl): every route of theirs is described, and nothing else.
TRANSCODED_PROTOS = ("openai.proto", "vector_stores.proto", "edge.proto")


def test_routes_are_the_protos_http_annotations() -> None:
    protos = "".join((REPO_ROOT / "protos" / "sluice" / "v1" / name).read_text() for name in TRANSCODED_PROTOS)
    routes = re.findall(r'\b(get|post|put|delete|patch):\s*"([^"]+)"', protos)
    annotated = {(verb.upper(), path) for verb, path in routes}
    described = {(method.upper(), path) for path, item in SPEC["paths"].items() for method in item
                 if method != "parameters"}
    assert described == annotated


def test_request_fields_are_the_ones_the_parsers_know() -> None:
    assert set(CHAT) == chat_request.KNOWN_FIELDS
    assert set(EMBEDDINGS) == embeddings.KNOWN_FIELDS
    assert set(SCHEMAS["CompletionRequest"]["properties"]) == completions_api.KNOWN_FIELDS
    assert set(SCHEMAS["ResponsesRequest"]["properties"]) == responses_api.KNOWN_FIELDS
    assert set(SCHEMAS["ChatCompletionRequest"]["required"]) == {"model", "messages"}


def test_enumerations_and_limits_are_the_parsers() -> None:
    shapes = [SCHEMAS[ref["$ref"].rsplit("/", 1)[1]] for ref in SCHEMAS["Message"]["oneOf"]]
    roles = [shape["properties"]["role"]["enum"] for shape in shapes]
    assert sorted(role for enum in roles for role in enum) == sorted(chat_request.ROLES)  # each role in one shape
    assert CHAT["stop"]["oneOf"][1]["maxItems"] == chat_request.MAX_STOP_SEQUENCES
    assert CHAT["tools"]["maxItems"] == tool_spec.MAX_TOOLS
    assert SCHEMAS["Tool"]["properties"]["function"]["properties"]["name"]["pattern"] == tool_spec.NAME.pattern
    assert set(CHAT["tool_choice"]["oneOf"][0]["enum"]) == set(tool_spec.TOOL_CHOICE_MODES)
    assert set(CHAT["server_tools"]["items"]["enum"]) == set(builtin_registry("127.0.0.1:1").names())
    retrieval = CHAT["retrieval"]["properties"]
    assert retrieval["collections"]["items"]["pattern"] == chat_request._COLLECTION.pattern
    assert retrieval["collections"]["maxItems"] == chat_request.MAX_RETRIEVAL_COLLECTIONS
    assert retrieval["top_k"]["maximum"] == chat_request.MAX_RETRIEVAL_TOP_K
    assert EMBEDDINGS["model"]["enum"] == [embeddings.MODEL_NAME]
    assert EMBEDDINGS["dimensions"]["enum"] == [embeddings.DIMENSIONS]
    assert EMBEDDINGS["input"]["oneOf"][1]["maxItems"] == embeddings.MAX_INPUTS


def _numeric(properties: dict[str, Any]) -> list[str]:
    return sorted(name for name, prop in properties.items() if "minimum" in prop or "maximum" in prop)


def _parse_chat(body: dict[str, Any]) -> None:
    if "top_logprobs" in body:
        body = {**body, "logprobs": True}  # top_logprobs needs logprobs
    chat_request.parse_chat_request(body)


@pytest.mark.parametrize("name", _numeric(CHAT))
def test_chat_numeric_bounds_are_the_parsers(name: str) -> None:
    prop = CHAT[name]
    step = 1 if prop["type"] == "integer" else 0.001
    for key, sign in (("minimum", -1), ("maximum", 1)):
        if key not in prop:
            continue
        _parse_chat({**VALID_CHAT, name: prop[key]})  # the edge itself is accepted
        with pytest.raises(ApiError) as refused:
            _parse_chat({**VALID_CHAT, name: prop[key] + sign * step})
        assert (refused.value.status, refused.value.param) == (400, name)
    if prop["type"] == "integer":
        with pytest.raises(ApiError) as refused:
            _parse_chat({**VALID_CHAT, name: 1.5})
        assert refused.value.param == name


def test_retrieval_top_k_bounds_are_the_parsers() -> None:
    prop = CHAT["retrieval"]["properties"]["top_k"]
    for top_k, accepted in ((prop["minimum"], True), (prop["maximum"], True), (prop["minimum"] - 1, False),
                            (prop["maximum"] + 1, False)):
        body = {**VALID_CHAT, "retrieval": {"collections": ["docs"], "top_k": top_k}}
        if accepted:
            assert chat_request.parse_chat_request(body).retrieval.top_k == top_k
        else:
            with pytest.raises(ApiError):
                chat_request.parse_chat_request(body)


def test_collection_names_and_file_purposes_are_the_services_rules() -> None:
    assert SCHEMAS["CollectionName"]["pattern"] == NAME_PATTERN.pattern
    purposes = SPEC["paths"]["/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert purposes["properties"]["purpose"]["enum"] == list(PURPOSES)
