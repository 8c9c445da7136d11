"""Envoy's Aggregated Discovery Service (ADS), state of the world, on grpcio.

One bidirectional stream per Envoy carries every type. Per type the stream remembers what it last sent (version and
nonce) and which names Envoy asked for; a request whose nonce is not the last one sent is stale and ignored, one that
carries `error_detail` is a NACK (recorded, nothing resent until the configuration changes), any other answering a
response is an ACK. When the configuration changes, the types are pushed in a safe order: clusters and endpoints
before the listeners and routes that use them, or the reverse when clusters go away.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc

from services.control_plane import xds_api
from services.control_plane.config_store import ConfigStore

log = logging.getLogger("sluice.control_plane")

_UPDATE = object()  # a queue event: the store's configuration changed
_END = object()  # a queue event: Envoy closed its side of the stream
_UNKNOWN_NODE = "unknown"  # until the first request names the node
# Types answered with only the names Envoy asked for; listeners and clusters are always sent whole (wildcard).
_NAMED_TYPES = {xds_api.ENDPOINT_TYPE, xds_api.ROUTE_TYPE}


class _Stream:
    """The xDS state of one Envoy's ADS stream."""

    def __init__(self, store: ConfigStore, nonces: Iterator[int]) -> None:
        self.store = store
        self.node = _UNKNOWN_NODE
        self.nonces = nonces
        self.names: dict[str, tuple[str, ...]] = {}  # type URL -> names asked for (empty: all)
        self.sent: dict[str, tuple[str, str, tuple[str, ...]]] = {}  # type URL -> (version, nonce, names) sent

    def on_request(self, request: xds_api.DiscoveryRequest) -> list[xds_api.DiscoveryResponse]:
        if request.node.id and request.node.id != self.node:
            if self.node != _UNKNOWN_NODE:
                self.store.disconnected(self.node)
            self.node = request.node.id
            self.store.connected(self.node)
        type_url = request.type_url
        sent = self.sent.get(type_url)
        if request.response_nonce:
            if sent is None or request.response_nonce != sent[1]:
                return []  # answers a response that has since been superseded
            if request.HasField("error_detail"):
                self.store.record_nack(self.node, type_url, sent[0], request.error_detail.message)
            else:
                self.store.record_ack(self.node, type_url, request.version_info)
        self.names[type_url] = tuple(request.resource_names)
        return self._respond([type_url])

    def on_update(self) -> list[xds_api.DiscoveryResponse]:
        subscribed = [t for t in xds_api.PUSH_ORDER if t in self.names]
        current_clusters = self.store.current(xds_api.CLUSTER_TYPE)
        sent_clusters = self.sent.get(xds_api.CLUSTER_TYPE)
        removing = (current_clusters is not None and sent_clusters is not None
                    and not set(sent_clusters[2]) <= {name for name, _ in current_clusters[1]})
        return self._respond(list(reversed(subscribed)) if removing else subscribed)

    def _respond(self, type_urls: list[str]) -> list[xds_api.DiscoveryResponse]:
        responses = []
        for type_url in type_urls:
            current = self.store.current(type_url)
            if current is None:
                continue
            version, resources = current
            wanted = self.names.get(type_url, ())
            if type_url in _NAMED_TYPES and wanted:
                resources = tuple(item for item in resources if item[0] in wanted)
            names = tuple(name for name, _ in resources)
            sent = self.sent.get(type_url)
            if sent is not None and sent[0] == version and (type_url not in _NAMED_TYPES or sent[2] == names):
                continue  # Envoy has (or has refused) exactly this already
            nonce = str(next(self.nonces))
            log.debug("to %s: %s version %s nonce %s", self.node, type_url.rsplit(".", 1)[-1], version, nonce)
            self.sent[type_url] = (version, nonce, names)
            responses.append(xds_api.DiscoveryResponse(version_info=version, type_url=type_url, nonce=nonce,
                                                       resources=[packed for _, packed in resources]))
        return responses


class AggregatedDiscovery(xds_api.AggregatedDiscoveryServiceServicer):
    def __init__(self, store: ConfigStore) -> None:
        self.store = store
        self._nonces = itertools.count(1)

    def StreamAggregatedResources(self, request_iterator, context) -> Iterator[xds_api.DiscoveryResponse]:  # noqa: N802
        events: queue.Queue[object] = queue.Queue()

        def read() -> None:
            try:
                for request in request_iterator:
                    events.put(request)
            except grpc.RpcError:
                pass
            finally:
                events.put(_END)

        threading.Thread(target=read, name="ads-reader", daemon=True).start()
        token = self.store.subscribe(lambda: events.put(_UPDATE))
        stream = _Stream(self.store, self._nonces)
        try:
            while context.is_active():
                event = events.get()
                if event is _END:
                    return
                yield from (stream.on_update() if event is _UPDATE else stream.on_request(event))
        finally:
            self.store.unsubscribe(token)
            if stream.node != _UNKNOWN_NODE:
                self.store.disconnected(stream.node)
            log.info("Envoy %s disconnected from ADS", stream.node)


def create_server(store: ConfigStore, address: str, max_streams: int = 16) -> tuple[grpc.Server, int]:
    """The control plane's gRPC server (not started) and the port it bound (`address` may end in :0)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_streams, thread_name_prefix="xds"))
    xds_api.add_ads_servicer(AggregatedDiscovery(store), server)
    port = server.add_insecure_port(address)
    return server, port
