"""`sluice trace <request id | trace id>`: one trace from the local receiver as a waterfall in the terminal, one line
per span (service, span name indented under its parent, start offset, duration, a bar on the trace's time axis)."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

BAR_WIDTH = 32
NAME_WIDTH = 52


def ordered(spans: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Spans depth-first in start order, each with its depth; a span whose parent is not in the trace is a root."""
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        parent = span.get("parent_span_id")
        children.setdefault(parent if parent in ids else None, []).append(span)
    out: list[tuple[int, dict[str, Any]]] = []

    def visit(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: (s["start_ns"], s["end_ns"])):
            out.append((depth, span))
            visit(span["span_id"], depth + 1)

    visit(None, 0)
    return out


def render(trace: dict[str, Any]) -> str:
    spans = trace["spans"]
    if not spans:
        return "no spans"
    start = min(s["start_ns"] for s in spans)
    end = max(s["end_ns"] for s in spans)
    total = max(end - start, 1)
    request_ids = sorted({s["request_id"] for s in spans if s.get("request_id")})
    services = sorted({s["service"] for s in spans})
    lines = [f"trace {trace['trace_id']}  request {', '.join(request_ids) or '-'}  {len(spans)} spans  "
             f"{total / 1e6:.1f} ms  services: {', '.join(services)}",
             f"{'service':<13} {'span':<{NAME_WIDTH}} {'start':>10} {'duration':>10}  timeline"]
    for depth, span in ordered(spans):
        name = ("  " * depth + span["name"])[:NAME_WIDTH]
        offset = span["start_ns"] - start
        duration = max(span["end_ns"] - span["start_ns"], 0)
        left = int(offset / total * BAR_WIDTH)
        width = max(1, round(duration / total * BAR_WIDTH))
        bar = " " * left + "█" * min(width, BAR_WIDTH - left)
        flag = "  !" if span.get("status") == "error" else ""
        lines.append(f"{span['service'][:13]:<13} {name:<{NAME_WIDTH}} {offset / 1e6:>7.1f} ms "
                     f"{duration / 1e6:>7.1f} ms  |{bar:<{BAR_WIDTH}}|{flag}")
    return "\n".join(lines)


def fetch(base_url: str, key: str | None, limit: int = 20) -> dict[str, Any]:
    path = f"/api/traces/{urllib.parse.quote(key, safe='')}" if key else f"/api/traces?limit={limit}"
    with urllib.request.urlopen(base_url + path, timeout=10) as response:
        return json.loads(response.read())


def main(base_url: str, key: str | None, as_json: bool = False, limit: int = 20) -> int:
    try:
        payload = fetch(base_url, key, limit)
    except urllib.error.HTTPError as exc:
        message = json.loads(exc.read() or b"{}").get("error", exc.reason)
        print(f"sluice: {message}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"sluice: the trace receiver at {base_url} is not reachable ({exc}); is the stack up?", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(payload, indent=2))
    elif key:
        print(render(payload))
    else:
        for item in payload["traces"]:
            print(f"{item['trace_id']}  {item['spans']:>4} spans  {item['duration_ms']:>9.1f} ms  "
                  f"request {item.get('request_id') or '-'}")
    return 0
