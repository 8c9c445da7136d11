"""Renders the Envoy bootstrap for the Sluice edge from `envoy/envoy.yaml.tmpl` and `envoy/error_status.lua`.

The template is the one source of truth for the proxy's shape; this module only fills in ports, paths and limits
(and inlines the Lua filter, which lives in its own file so it can be read and linted as Lua).
"""

from __future__ import annotations

import ipaddress
import json
import string
import textwrap
from pathlib import Path

ENVOY_DIR = Path(__file__).resolve().parents[2] / "envoy"
TEMPLATE_PATH = ENVOY_DIR / "envoy.yaml.tmpl"
LUA_PATH = ENVOY_DIR / "error_status.lua"
# Files Envoy answers itself (direct responses): the playground page and script, and the OpenAPI document.
PLAYGROUND_HTML = ENVOY_DIR / "playground" / "index.html"
PLAYGROUND_JS = ENVOY_DIR / "playground" / "playground.js"
OPENAPI_PATH = ENVOY_DIR / "openapi.yaml"

# Indentation of the `inline_string: |` block scalar in the template that receives the Lua source.
_LUA_INDENT = " " * 18
# Largest transcoded response Envoy will buffer (non-streamed bodies only; SSE frames pass one by one).
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# Edge limits against slow and silent clients and floods (issue S11); the defaults of render_envoy_config.
CONNECTION_BUFFER_BYTES = 32 * 1024  # Envoy's per-connection buffer, downstream and to the orchestrator
DOWNSTREAM_SEND_BUFFER_BYTES = 32 * 1024  # SO_SNDBUF of client connections (the kernel doubles it)
UPSTREAM_STREAM_WINDOW_BYTES = 64 * 1024  # HTTP/2 window per stream towards the orchestrator (65535 at least)
MAX_DOWNSTREAM_CONNECTIONS = 4096
MAX_STREAMS_PER_CONNECTION = 100  # concurrent HTTP/2 (native gRPC) streams per downstream connection
MAX_HEAP_BYTES = 1024 * 1024 * 1024  # the overload manager's heap budget


def _port(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise ValueError(f"{name} must be a TCP port in 1..65535, got {value!r}")
    return value


def _positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _stream_window(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 65535 <= value <= 2**31 - 1:
        raise ValueError(f"upstream_stream_window_bytes must be in 65535..2147483647 (HTTP/2), got {value!r}")
    return value


def _otlp_address(target: str) -> dict[str, object]:
    """`host:port` of the OTLP/gRPC collector Envoy's tracer exports to."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"the OTLP endpoint must be host:port, got {target!r}")
    return {"otlp_address": json.dumps(host.strip("[]")), "otlp_port": _port("otlp port", int(port))}


def _sampling_percent(share: float) -> float:
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"trace sampling must be in [0, 1], got {share!r}")
    return round(share * 100, 4)


def render_envoy_config(*, out_path: Path, **settings: object) -> Path:
    """Write a complete (static) Envoy v3 bootstrap to `out_path` and return that path; `settings` are those of
    render_envoy_yaml. The running stack serves the same configuration over xDS instead (services/control_plane/)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(render_envoy_yaml(**settings), encoding="utf-8")  # type: ignore[arg-type]
    return out_path


def render_envoy_yaml(
    *,
    listen_port: int,
    admin_port: int,
    orchestrator_port: int,
    descriptor_path: Path,
    listen_address: str = "127.0.0.1",
    local_rps: int = 1000,
    max_request_bytes: int = 4 * 1024 * 1024,
    otlp_target: str = "127.0.0.1:4317",
    trace_sampling: float = 1.0,
    connection_buffer_bytes: int = CONNECTION_BUFFER_BYTES,
    downstream_send_buffer_bytes: int = DOWNSTREAM_SEND_BUFFER_BYTES,
    upstream_stream_window_bytes: int = UPSTREAM_STREAM_WINDOW_BYTES,
    max_downstream_connections: int = MAX_DOWNSTREAM_CONNECTIONS,
    max_streams_per_connection: int = MAX_STREAMS_PER_CONNECTION,
    max_heap_bytes: int = MAX_HEAP_BYTES,
) -> str:
    """The template filled in: a complete Envoy v3 bootstrap with static listeners, routes and clusters.

    `descriptor_path` is the `--include_imports` descriptor set of `protos/` (normally `gen/sluice.pb`); it is made
    absolute here because Envoy resolves relative paths against its own working directory.
    """
    lua = LUA_PATH.read_text(encoding="utf-8")
    values = {
        "listen_port": _port("listen_port", listen_port),
        "listen_address": json.dumps(str(ipaddress.ip_address(listen_address))),
        "admin_port": _port("admin_port", admin_port),
        "orchestrator_port": _port("orchestrator_port", orchestrator_port),
        # A JSON string is a valid YAML scalar: quoting survives spaces, colons and '#' in the path.
        "descriptor_path": json.dumps(str(Path(descriptor_path).resolve())),
        "local_rps": _positive("local_rps", local_rps),
        "max_request_bytes": _positive("max_request_bytes", max_request_bytes),
        "max_response_bytes": max(MAX_RESPONSE_BYTES, max_request_bytes),
        **_otlp_address(otlp_target),
        "trace_sampling_percent": _sampling_percent(trace_sampling),
        "connection_buffer_bytes": _positive("connection_buffer_bytes", connection_buffer_bytes),
        "downstream_send_buffer_bytes": _positive("downstream_send_buffer_bytes", downstream_send_buffer_bytes),
        "upstream_stream_window_bytes": _stream_window(upstream_stream_window_bytes),
        "max_downstream_connections": _positive("max_downstream_connections", max_downstream_connections),
        "max_streams_per_connection": _positive("max_streams_per_connection", max_streams_per_connection),
        "max_heap_bytes": _positive("max_heap_bytes", max_heap_bytes),
        "playground_html": json.dumps(str(PLAYGROUND_HTML)),
        "playground_js": json.dumps(str(PLAYGROUND_JS)),
        "openapi_yaml": json.dumps(str(OPENAPI_PATH)),
        "lua_source": textwrap.indent(lua.rstrip("\n"), _LUA_INDENT, lambda line: True),
    }
    return string.Template(TEMPLATE_PATH.read_text(encoding="utf-8")).substitute(values)
