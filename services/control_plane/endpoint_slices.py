"""Orchestrator endpoints in Kubernetes: the EndpointSlices of the orchestrator Service, watched with the Kubernetes
Python client, mapped to the control plane's endpoints (a ready pod is an endpoint; a terminating one that still
serves is kept as DRAINING so its in-flight streams finish while Envoy sends it nothing new)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from services.control_plane.resources import Endpoint

log = logging.getLogger("sluice.control_plane")
SERVICE_LABEL = "kubernetes.io/service-name"


def _port(slice_: Any, port_name: str) -> int | None:
    ports = slice_.ports or []
    named = [p for p in ports if p.name == port_name]
    chosen = named or (ports if len(ports) == 1 else [])
    return chosen[0].port if chosen and chosen[0].port else None


def endpoints_from_slices(slices: Iterable[Any], port_name: str = "grpc") -> list[Endpoint]:
    """Every address of the slices (discovery.k8s.io/v1 EndpointSlice objects) as an Endpoint, sorted, without
    duplicates. Endpoints neither ready nor serving are left out; `ready` is taken as true when unset (the API's
    own rule)."""
    found: dict[tuple[str, int], Endpoint] = {}
    for slice_ in slices:
        port = _port(slice_, port_name)
        if port is None or slice_.address_type not in ("IPv4", "IPv6"):
            continue
        for endpoint in slice_.endpoints or []:
            conditions = endpoint.conditions
            ready = conditions is None or conditions.ready is not False
            terminating = conditions is not None and bool(conditions.terminating)
            serving = conditions is not None and bool(conditions.serving)
            if not ready and not (terminating and serving):
                continue
            for address in endpoint.addresses or []:
                key = (address, port)
                candidate = Endpoint(address, port, draining=not ready)
                if key not in found or found[key].draining:
                    found[key] = candidate
    return [found[key] for key in sorted(found)]


def watch_endpoint_slices(namespace: str, service: str, on_change: Callable[[list[Endpoint]], None],
                          port_name: str = "grpc") -> None:
    """Calls `on_change` with the service's endpoints at start and after every change, forever (in-cluster
    credentials; the ServiceAccount needs get/list/watch on endpointslices)."""
    from kubernetes import client, config, watch

    config.load_incluster_config()
    api = client.DiscoveryV1Api()
    selector = f"{SERVICE_LABEL}={service}"
    while True:
        try:
            listing = api.list_namespaced_endpoint_slice(namespace, label_selector=selector)
            slices = {s.metadata.name: s for s in listing.items}
            on_change(endpoints_from_slices(slices.values(), port_name))
            for event in watch.Watch().stream(api.list_namespaced_endpoint_slice, namespace, label_selector=selector,
                                              resource_version=listing.metadata.resource_version,
                                              timeout_seconds=300):
                item = event["object"]
                if event["type"] == "DELETED":
                    slices.pop(item.metadata.name, None)
                else:
                    slices[item.metadata.name] = item
                on_change(endpoints_from_slices(slices.values(), port_name))
        except Exception as error:  # the API server went away, or the watch expired (410): list again
            log.warning("EndpointSlice watch of %s/%s ended (%s); listing again", namespace, service, error)
            time.sleep(1.0)
