"""The edge's xDS resources, built from the one Envoy template (envoy/envoy.yaml.tmpl rendered with the live settings).

The template stays the single description of listeners, routes and clusters. This module splits its rendering in two:
- the bootstrap Envoy starts from: everything outside `static_resources` (admin, runtime, overload manager: these are
  bootstrap-only in Envoy's API), the node identity, and one static cluster, the control plane, which ADS names;
- the dynamic resources served over ADS: each listener (its inline route table moved to RDS), each cluster (the
  orchestrator cluster becomes an EDS cluster) and the orchestrator's ClusterLoadAssignment, built from the live set
  of orchestrator replicas rather than the template's one address.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from google.protobuf import any_pb2, json_format

from services.control_plane import xds_api

ORCHESTRATOR_CLUSTER = "orchestrator"
CONTROL_PLANE_CLUSTER = "sluice_xds"
_HCM = "envoy.filters.network.http_connection_manager"
_ADS_SOURCE = {"ads": {}, "resource_api_version": "V3"}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One orchestrator replica as Envoy reaches it. `draining` keeps it in EDS with health DRAINING (no new requests);
    normally a draining replica is simply left out."""

    host: str
    port: int
    draining: bool = False


@dataclass(frozen=True, slots=True)
class EdgeResources:
    """Everything Envoy gets over ADS, by type URL: a list of (name, Any-packed resource)."""

    by_type: Mapping[str, tuple[tuple[str, any_pb2.Any], ...]]

    def names(self, type_url: str) -> list[str]:
        return [name for name, _ in self.by_type.get(type_url, ())]


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)  # map fields (Struct) in a fixed order: stable content versions
    return packed


def _parse(document: Mapping[str, Any], message_type: type) -> Any:
    # json_format resolves every typed_config's @type through the default pool (xds_api imports those types).
    return json_format.ParseDict(document, message_type())


def load_assignment(endpoints: Iterable[Endpoint], cluster: str = ORCHESTRATOR_CLUSTER) -> Any:
    lb_endpoints = [{"endpoint": {"address": {"socket_address": {"address": e.host, "port_value": e.port}}},
                     "health_status": "DRAINING" if e.draining else "HEALTHY"} for e in endpoints]
    return _parse({"cluster_name": cluster, "endpoints": [{"lb_endpoints": lb_endpoints}] if lb_endpoints else []},
                  xds_api.ClusterLoadAssignment)


def _split_listener(listener: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The listener with each inline route table replaced by an RDS reference, and those route tables."""
    listener = copy.deepcopy(listener)
    routes = []
    for chain in listener.get("filter_chains", []):
        for network_filter in chain.get("filters", []):
            config = network_filter.get("typed_config", {})
            if network_filter.get("name") == _HCM and "route_config" in config:
                route_config = config.pop("route_config")
                route_config.setdefault("name", listener["name"])
                config["rds"] = {"route_config_name": route_config["name"], "config_source": _ADS_SOURCE}
                routes.append(route_config)
    return listener, routes


def edge_resources(rendered_template: str, orchestrators: Iterable[Endpoint]) -> EdgeResources:
    """The ADS resources of a rendered template, with the orchestrator cluster's endpoints set to `orchestrators`."""
    static = yaml.safe_load(rendered_template)["static_resources"]
    listeners, routes, clusters = [], [], []
    for listener in static.get("listeners", []):
        listener_doc, route_docs = _split_listener(listener)
        listeners.append((listener_doc["name"], _pack(_parse(listener_doc, xds_api.Listener))))
        routes += [(doc["name"], _pack(_parse(doc, xds_api.RouteConfiguration))) for doc in route_docs]
    for cluster in static.get("clusters", []):
        cluster = copy.deepcopy(cluster)
        if cluster["name"] == ORCHESTRATOR_CLUSTER:
            cluster.pop("load_assignment", None)
            cluster["type"] = "EDS"
            cluster["eds_cluster_config"] = {"eds_config": _ADS_SOURCE}
        clusters.append((cluster["name"], _pack(_parse(cluster, xds_api.Cluster))))
    assignment = (ORCHESTRATOR_CLUSTER, _pack(load_assignment(orchestrators)))
    return EdgeResources({xds_api.CLUSTER_TYPE: tuple(clusters), xds_api.ENDPOINT_TYPE: (assignment,),
                          xds_api.LISTENER_TYPE: tuple(listeners), xds_api.ROUTE_TYPE: tuple(routes)})


def bootstrap(rendered_template: str, *, node_id: str, control_plane_host: str, control_plane_port: int) -> str:
    """Envoy's bootstrap YAML for a dynamic edge: the template's bootstrap-only sections (admin, runtime, overload
    manager), the node, and the control plane's cluster; listeners and clusters come over ADS."""
    document = yaml.safe_load(rendered_template)
    document.pop("static_resources", None)
    document["node"] = {"id": node_id, "cluster": "sluice-edge"}
    document["dynamic_resources"] = {
        "ads_config": {"api_type": "GRPC", "transport_api_version": "V3", "set_node_on_first_message_only": True,
                       "grpc_services": [{"envoy_grpc": {"cluster_name": CONTROL_PLANE_CLUSTER}}]},
        "cds_config": _ADS_SOURCE,
        "lds_config": _ADS_SOURCE,
    }
    document["static_resources"] = {"clusters": [{
        "name": CONTROL_PLANE_CLUSTER, "type": "STATIC" if _is_ip(control_plane_host) else "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": CONTROL_PLANE_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": control_plane_host, "port_value": control_plane_port}}}}]}]},
    }]}
    return yaml.dump(document, Dumper=_PlainDumper, sort_keys=False)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _PlainDumper(yaml.SafeDumper):
    """Writes shared sub-documents out in full (no &anchors), so the bootstrap reads plainly."""

    def ignore_aliases(self, data: Any) -> bool:
        return True
