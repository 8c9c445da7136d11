"""Stop strings are matched on detokenised text: hold back just enough text to catch a stop split across tokens."""

from __future__ import annotations


class StopStringMatcher:
    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self._buffer = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop string was hit). After a hit nothing more should be fed."""
        self._buffer += text
        hits = [i for i in (self._buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self._buffer = self._buffer[: min(hits)], ""
            return out, True
        safe = len(self._buffer) - self._hold
        if safe <= 0:
            return "", False
        out, self._buffer = self._buffer[:safe], self._buffer[safe:]
        return out, False

    def flush(self) -> str:
        out, self._buffer = self._buffer, ""
        return out
