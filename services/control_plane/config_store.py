"""What the control plane serves, and what each Envoy has accepted.

One configuration at a time, as a set of resources per type URL, each type versioned by a hash of its content (an
update that leaves a type unchanged does not touch it in Envoy). Envoys report back per type: an ACK records the
version they now run; a NACK is logged with Envoy's reason and the update is dropped for that type, so the control
plane goes back to serving the last version Envoy accepted (to it and to any Envoy that connects later).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf import any_pb2

from services.control_plane import xds_api
from services.control_plane.resources import EdgeResources

log = logging.getLogger("sluice.control_plane")

Resources = tuple[tuple[str, any_pb2.Any], ...]


def content_version(resources: Resources) -> str:
    digest = hashlib.sha256()
    for name, packed in sorted(resources, key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(packed.SerializeToString(deterministic=True))
    return digest.hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Rejection:
    """A NACK: Envoy `node` refused `version` of `type_url` for `reason`."""

    node: str
    type_url: str
    version: str
    reason: str
    at: float


class ConfigStore:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._current: dict[str, tuple[str, Resources]] = {}
        self._last_good: dict[str, tuple[str, Resources]] = {}  # the last version some Envoy ACKed, per type
        self._acked: dict[str, dict[str, str]] = {}  # node id -> type URL -> version it ACKed
        self._listeners: dict[int, Callable[[], None]] = {}
        self._streams: dict[str, int] = {}  # node id -> open ADS streams
        self.rejections: list[Rejection] = []

    # -- what is served -------------------------------------------------------------------------------------------
    def publish(self, resources: EdgeResources) -> dict[str, str]:
        """Serve `resources` from now on; returns the version of each type."""
        with self._changed:
            for type_url in xds_api.PUSH_ORDER:
                items = tuple(resources.by_type.get(type_url, ()))
                self._current[type_url] = (content_version(items), items)
            versions = self.versions()
            listeners = list(self._listeners.values())
        for notify in listeners:
            notify()
        return versions

    def versions(self) -> dict[str, str]:
        with self._changed:
            return {type_url: version for type_url, (version, _) in self._current.items()}

    def current(self, type_url: str) -> tuple[str, Resources] | None:
        with self._changed:
            return self._current.get(type_url)

    def subscribe(self, notify: Callable[[], None]) -> int:
        with self._changed:
            token = max(self._listeners, default=0) + 1
            self._listeners[token] = notify
            return token

    def unsubscribe(self, token: int) -> None:
        with self._changed:
            self._listeners.pop(token, None)

    # -- what Envoy says ------------------------------------------------------------------------------------------
    def record_ack(self, node: str, type_url: str, version: str) -> None:
        log.debug("ACK from %s: %s version %s", node, type_url.rsplit(".", 1)[-1], version)
        with self._changed:
            self._acked.setdefault(node, {})[type_url] = version
            current = self._current.get(type_url)
            if current is not None and current[0] == version:
                self._last_good[type_url] = current
            self._changed.notify_all()

    def record_nack(self, node: str, type_url: str, version: str, reason: str) -> None:
        log.warning("Envoy %s rejected %s version %s: %s", node, type_url.rsplit(".", 1)[-1], version, reason)
        with self._changed:
            self.rejections.append(Rejection(node, type_url, version, reason, time.time()))
            current, good = self._current.get(type_url), self._last_good.get(type_url)
            reverted = current is not None and current[0] == version and good is not None
            if reverted:
                self._current[type_url] = good
            listeners = list(self._listeners.values()) if reverted else []
            self._changed.notify_all()
        if reverted:
            log.warning("serving %s version %s again (the last one Envoy accepted)", type_url.rsplit(".", 1)[-1],
                        good[0])
        for notify in listeners:
            notify()

    def acked(self) -> dict[str, dict[str, str]]:
        """Node id -> type URL -> the version that Envoy runs."""
        with self._changed:
            return {node: dict(types) for node, types in self._acked.items()}

    def wait_for_ack(self, type_url: str, version: str, timeout: float) -> bool:
        """True once every connected Envoy (at least one) has ACKed `version` of `type_url`."""
        def done() -> bool:
            nodes = self._acked.values()
            return bool(nodes) and all(types.get(type_url) == version for types in nodes)

        with self._changed:
            return self._changed.wait_for(done, timeout)

    def connected(self, node: str) -> None:
        with self._changed:
            self._streams[node] = self._streams.get(node, 0) + 1

    def disconnected(self, node: str) -> None:
        """One of an Envoy's ADS streams ended; once it has none (a reconnect opens the next one first, or not at all)
        it no longer counts for wait_for_ack."""
        with self._changed:
            self._streams[node] = self._streams.get(node, 1) - 1
            if self._streams[node] <= 0:
                del self._streams[node]
                self._acked.pop(node, None)
            self._changed.notify_all()
