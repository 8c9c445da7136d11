"""Recent spans in a SQLite file (one writer, any number of readers), found by trace id or request id.

The newest `max_spans` are kept; older ones are deleted as new ones arrive."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from services.telemetry.otlp import SpanRow

SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT NOT NULL,
    service TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT NOT NULL,
    attributes TEXT NOT NULL,
    events TEXT NOT NULL,
    request_id TEXT
);
CREATE INDEX IF NOT EXISTS spans_trace ON spans (trace_id);
CREATE INDEX IF NOT EXISTS spans_request ON spans (request_id) WHERE request_id IS NOT NULL;
"""
_COLUMNS = ("trace_id, span_id, parent_span_id, service, name, kind, start_ns, end_ns, status, status_message, "
            "attributes, events, request_id")


class SpanStore:
    def __init__(self, path: Path | str, max_spans: int = 200_000) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.max_spans = max_spans
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._inserted = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, rows: list[SpanRow]) -> None:
        if not rows:
            return
        values = [(r.trace_id, r.span_id, r.parent_span_id, r.service, r.name, r.kind, r.start_ns, r.end_ns, r.status,
                   r.status_message, json.dumps(r.attributes, default=str), json.dumps(r.events, default=str),
                   r.request_id) for r in rows]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(f"INSERT INTO spans ({_COLUMNS}) VALUES ({', '.join('?' * 13)})", values)
            self._inserted += len(rows)
            if self._inserted >= max(1000, self.max_spans // 20):  # prune now and then, not on every batch
                self._inserted = 0
                self._db.execute("DELETE FROM spans WHERE seq <= (SELECT MAX(seq) FROM spans) - ?", (self.max_spans,))
            self._db.execute("COMMIT")

    def _rows(self, sql: str, args: tuple) -> list[SpanRow]:
        with self._lock:
            cursor = self._db.execute(sql, args)
            fetched = cursor.fetchall()
        return [SpanRow(t, s, p, svc, n, k, start, end, st, msg, json.loads(a), json.loads(e), rid)
                for t, s, p, svc, n, k, start, end, st, msg, a, e, rid in fetched]

    def trace(self, trace_id: str) -> list[SpanRow]:
        return self._rows(f"SELECT {_COLUMNS} FROM spans WHERE trace_id = ? ORDER BY start_ns, seq",
                          (trace_id.lower(),))

    def trace_ids_for_request(self, request_id: str) -> list[str]:
        with self._lock:
            found = self._db.execute("SELECT trace_id, MAX(seq) FROM spans WHERE request_id = ? GROUP BY trace_id "
                                     "ORDER BY MAX(seq) DESC", (request_id,)).fetchall()
        return [trace_id for trace_id, _ in found]

    def find(self, key: str) -> list[SpanRow]:
        """The spans of a trace, by trace id or by request id (the most recent trace of that request)."""
        spans = self.trace(key) if len(key) == 32 else []
        if not spans:
            traces = self.trace_ids_for_request(key)
            spans = self.trace(traces[0]) if traces else []
        return spans

    def recent(self, limit: int = 20) -> list[dict]:
        """The latest traces: id, root span name, service, span count, start and duration."""
        with self._lock:
            found = self._db.execute(
                "SELECT trace_id, COUNT(*), MIN(start_ns), MAX(end_ns), MAX(seq), MAX(request_id) FROM spans "
                "GROUP BY trace_id ORDER BY MAX(seq) DESC LIMIT ?", (limit,)).fetchall()
        return [{"trace_id": t, "spans": n, "start_ns": start, "duration_ms": round((end - start) / 1e6, 3),
                 "request_id": rid} for t, n, start, end, _, rid in found]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM spans").fetchone()[0])
