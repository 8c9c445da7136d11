"""The xDS control plane without Envoy: resources from the template, the ADS stream's nonce/ACK/NACK rules and push
order, and the EndpointSlice -> endpoint mapping (Kubernetes client objects, no cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes.client import (
    DiscoveryV1EndpointPort,
    V1Endpoint,
    V1EndpointConditions,
    V1EndpointSlice,
    V1ObjectMeta,
)

from services.control_plane import xds_api
from services.control_plane.ads_server import _Stream
from services.control_plane.config_store import ConfigStore
from services.control_plane.endpoint_slices import endpoints_from_slices
from services.control_plane.resources import Endpoint, bootstrap, edge_resources
from services.supervisor.envoy_config import render_envoy_yaml


@pytest.fixture(scope="module")
def template() -> str:
    return render_envoy_yaml(listen_port=8080, admin_port=9901, orchestrator_port=50051,
                             descriptor_path=Path("/tmp/sluice.pb"))


def _unpack(packed, message_type):
    message = message_type()
    assert packed.Unpack(message)
    return message


def test_resources_come_from_the_template_with_live_endpoints(template: str) -> None:
    resources = edge_resources(template, [Endpoint("10.0.0.1", 7000), Endpoint("10.0.0.2", 7001, draining=True)])
    assert resources.names(xds_api.LISTENER_TYPE) == ["sluice"]
    assert resources.names(xds_api.ROUTE_TYPE) == ["sluice"]
    assert resources.names(xds_api.CLUSTER_TYPE) == ["orchestrator", "otlp_collector"]
    clusters = {n: _unpack(p, xds_api.Cluster) for n, p in resources.by_type[xds_api.CLUSTER_TYPE]}
    assert clusters["orchestrator"].type == xds_api.Cluster.EDS
    assert clusters["orchestrator"].eds_cluster_config.eds_config.HasField("ads")
    assert not clusters["orchestrator"].HasField("load_assignment")
    ((_, packed),) = resources.by_type[xds_api.ENDPOINT_TYPE]
    assignment = _unpack(packed, xds_api.ClusterLoadAssignment)
    members = [(e.endpoint.address.socket_address.port_value, e.health_status)
               for e in assignment.endpoints[0].lb_endpoints]
    assert members == [(7000, 1), (7001, 3)]  # HEALTHY, DRAINING
    ((_, packed),) = resources.by_type[xds_api.LISTENER_TYPE]
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

    manager = _unpack(_unpack(packed, xds_api.Listener).filter_chains[0].filters[0].typed_config,
                      hcm.HttpConnectionManager)
    assert manager.rds.route_config_name == "sluice" and not manager.HasField("route_config")


def test_bootstrap_names_only_the_control_plane(template: str) -> None:
    document = yaml.safe_load(bootstrap(template, node_id="n1", control_plane_host="127.0.0.1",
                                        control_plane_port=18000))
    assert [c["name"] for c in document["static_resources"]["clusters"]] == ["sluice_xds"]
    assert "listeners" not in document["static_resources"]
    assert document["node"]["id"] == "n1" and "overload_manager" in document and "admin" in document
    assert document["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["cluster_name"] == "sluice_xds"


def _request(type_url: str, nonce: str = "", version: str = "", names: tuple[str, ...] = (),
             error: str | None = None) -> xds_api.DiscoveryRequest:
    request = xds_api.DiscoveryRequest(type_url=type_url, response_nonce=nonce, version_info=version,
                                       resource_names=list(names))
    if error is not None:
        request.error_detail.code = 3
        request.error_detail.message = error
    return request


def _subscribed_stream(template: str) -> tuple[ConfigStore, _Stream]:
    store = ConfigStore()
    store.publish(edge_resources(template, [Endpoint("127.0.0.1", 1)]))
    stream = _Stream(store, iter(range(1, 1000)))
    for type_url in xds_api.PUSH_ORDER:
        names = ("orchestrator",) if type_url == xds_api.ENDPOINT_TYPE else ("sluice",) \
            if type_url == xds_api.ROUTE_TYPE else ()
        (response,) = stream.on_request(_request(type_url, names=names))
        assert stream.on_request(_request(type_url, response.nonce, response.version_info, names)) == []  # ACK
    return store, stream


def test_ack_nack_and_stale_nonces(template: str) -> None:
    store, stream = _subscribed_stream(template)
    assert store.acked()["unknown"] == store.versions()
    before = store.versions()
    store.publish(edge_resources(template.replace("max_tokens: 1000", "max_tokens: 5"), [Endpoint("127.0.0.1", 1)]))
    (update,) = stream.on_update()  # only the listener changed
    assert update.type_url == xds_api.LISTENER_TYPE and update.version_info != before[xds_api.LISTENER_TYPE]
    # A request answering an older nonce is ignored.
    assert stream.on_request(_request(xds_api.LISTENER_TYPE, "1", before[xds_api.LISTENER_TYPE])) == []
    # NACK: recorded, Envoy's version stays, and the last accepted listener is served again.
    (again,) = stream.on_request(_request(xds_api.LISTENER_TYPE, update.nonce, before[xds_api.LISTENER_TYPE],
                                          error="bad filter"))
    assert again.version_info == before[xds_api.LISTENER_TYPE]
    (rejection,) = store.rejections
    assert rejection.reason == "bad filter" and rejection.version == update.version_info
    assert store.acked()["unknown"][xds_api.LISTENER_TYPE] == before[xds_api.LISTENER_TYPE]
    assert store.versions()[xds_api.LISTENER_TYPE] == before[xds_api.LISTENER_TYPE]


def test_endpoint_changes_touch_only_eds_and_removed_clusters_go_last(template: str) -> None:
    store, stream = _subscribed_stream(template)
    store.publish(edge_resources(template, [Endpoint("127.0.0.1", 1), Endpoint("127.0.0.1", 2)]))
    assert [r.type_url for r in stream.on_update()] == [xds_api.ENDPOINT_TYPE]
    without_otlp = template.split("  # Where Envoy's spans go")[0].replace("max_tokens: 1000", "max_tokens: 6")
    store.publish(edge_resources(without_otlp, [Endpoint("127.0.0.1", 3)]))
    order = [r.type_url for r in stream.on_update()]
    assert order.index(xds_api.LISTENER_TYPE) < order.index(xds_api.CLUSTER_TYPE)  # a cluster goes: LDS first


def _slice(name: str, port: int, *endpoints: tuple[str, bool | None, bool, bool]) -> V1EndpointSlice:
    return V1EndpointSlice(
        metadata=V1ObjectMeta(name=name), address_type="IPv4",
        ports=[DiscoveryV1EndpointPort(name="grpc", port=port, protocol="TCP"),
               DiscoveryV1EndpointPort(name="metrics", port=9464, protocol="TCP")],
        endpoints=[V1Endpoint(addresses=[address], conditions=V1EndpointConditions(
            ready=ready, serving=serving, terminating=terminating))
            for address, ready, serving, terminating in endpoints])


def test_endpoint_slices_map_to_endpoints() -> None:
    slices = [
        _slice("orch-a", 50051, ("10.1.0.2", True, True, False), ("10.1.0.1", None, True, False),
               ("10.1.0.3", False, False, False)),  # not ready, not serving: left out
        _slice("orch-b", 50051, ("10.1.0.4", False, True, True),  # terminating but serving: draining
               ("10.1.0.2", True, True, False)),  # the same pod in two slices: once
    ]
    assert endpoints_from_slices(slices) == [Endpoint("10.1.0.1", 50051), Endpoint("10.1.0.2", 50051),
                                             Endpoint("10.1.0.4", 50051, draining=True)]
    assert endpoints_from_slices(slices, port_name="metrics")[0] == Endpoint("10.1.0.1", 9464)
    fqdn = V1EndpointSlice(metadata=V1ObjectMeta(name="x"), address_type="FQDN", endpoints=[], ports=[])
    assert endpoints_from_slices([fqdn]) == []


def test_an_envoy_counts_until_its_last_stream_ends(template: str) -> None:
    store = ConfigStore()
    store.publish(edge_resources(template, [Endpoint("127.0.0.1", 1)]))
    old, new = _Stream(store, iter(range(1, 100))), _Stream(store, iter(range(100, 200)))
    for stream in (old, new):  # a reconnect: the new stream opens before the old one is torn down
        request = _request(xds_api.CLUSTER_TYPE)
        request.node.id = "edge-1"
        (response,) = stream.on_request(request)
        stream.on_request(_request(xds_api.CLUSTER_TYPE, response.nonce, response.version_info))
    store.disconnected("edge-1")
    version = store.versions()[xds_api.CLUSTER_TYPE]
    assert store.wait_for_ack(xds_api.CLUSTER_TYPE, version, 0.1)  # still connected through the new stream
    store.disconnected("edge-1")
    assert store.acked() == {} and not store.wait_for_ack(xds_api.CLUSTER_TYPE, version, 0.1)
