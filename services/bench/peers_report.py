"""The table and chart of `sluice bench peers`, built from its report (pure functions apart from the PNG).

One table row per (peer, concurrency): output tokens/s, TTFT p50/p95, TPOT p50, the served fraction (requests
completed / sent), goodput (share of sent requests meeting both SLOs, and good requests/s), and tokens/s as a
ratio to vLLM's at the same concurrency. A skipped or failed peer is one row with its reason.
"""

from __future__ import annotations

from pathlib import Path

from services.bench.chart import NO_MATPLOTLIB, _load_axis, _pyplot

BASELINE = "vLLM server"
COLUMNS = ("peer", "concurrency", "tok/s", "TTFT p50 ms", "TTFT p95 ms", "TPOT p50 ms", "served", "goodput",
           "good req/s", "× vLLM tok/s")
COLOURS = {"vLLM server": "#8c8c8c", "Triton direct": "#4c72b0", "Sluice stack": "#dd8452"}


def level_figures(level: dict) -> dict[str, float | int | None]:
    """The table's figures of one level (a summarize_requests result plus its `concurrency`)."""
    requests = level["requests"]
    return {"concurrency": level["concurrency"], "tok/s": level["output_token_throughput"],
            "TTFT p50 ms": level["ttft_ms"]["p50"], "TTFT p95 ms": level["ttft_ms"]["p95"],
            "TPOT p50 ms": level["tpot_ms"]["p50"],
            "served": round(level["completed"] / requests, 4) if requests else None,
            "goodput": level["goodput"]["fraction"], "good req/s": level["goodput"]["requests_per_s"]}


def table_rows(rows: list[dict]) -> list[dict[str, object]]:
    """Flattens the report's peers into table rows, with each level's tok/s as a ratio to vLLM's."""
    baseline = {}
    for row in rows:
        if row["name"] == BASELINE and row["status"] == "ok":
            baseline = {level["concurrency"]: level["output_token_throughput"] for level in row["levels"]}
    out: list[dict[str, object]] = []
    for row in rows:
        if row["status"] != "ok":
            out.append({"peer": row["name"], "status": row["status"], "reason": row.get("reason", "")})
            continue
        for level in row["levels"]:
            figures = level_figures(level)
            base, tps = baseline.get(level["concurrency"]), figures["tok/s"]
            ratio = round(tps / base, 3) if base and tps is not None else None
            out.append({"peer": row["name"], "status": "ok", **figures, "× vLLM tok/s": ratio})
    return out


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def markdown_table(rows: list[dict]) -> str:
    """The table in Markdown; served and goodput as percentages."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for entry in table_rows(rows):
        if entry["status"] != "ok":
            cells = [str(entry["peer"]), f"{entry['status']}: {entry['reason']}"] + [""] * (len(COLUMNS) - 2)
        else:
            shown = dict(entry)
            for share in ("served", "goodput"):
                if shown[share] is not None:
                    shown[share] = f"{100.0 * float(shown[share]):.0f}%"  # type: ignore[arg-type]
            cells = [_cell(shown[column]) for column in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    """peers.md: what was run, on what, and the table."""
    meta, machine = report["meta"], report["machine"]
    slo = meta["slo"]
    loads = ", ".join(f"{row['name']} {row.get('load_avg_before')} → {row.get('load_avg_after')}"
                      for row in report["peers"] if row["status"] != "skipped")
    return "\n".join([
        "# sluice bench peers",
        "",
        f"{meta['started_utc']} · checkpoint `{meta['model_dir']}` · prompts ≈{meta['prompt_tokens']} tokens "
        f"(chat template included), {meta['output_tokens']} output tokens forced (min_tokens = max_tokens), "
        f"temperature {meta['temperature']:g} · closed loop at concurrency {', '.join(map(str, meta['concurrency']))}"
        f", requests per level {meta['requests_per_level']} · goodput: TTFT ≤ {slo['ttft_ms']:g} ms and TPOT ≤ "
        f"{slo['tpot_ms']:g} ms · vLLM dtype {meta.get('vllm_dtype', 'float32')}, Sluice engine projections "
        f"{meta.get('sluice_matmul_dtype', 'float32')}",
        "",
        f"Machine: {machine['cpu']} ({machine['cpus']} CPUs), {machine['platform']}; vLLM {machine['vllm']}. "
        f"Load average (1/5/15 min) before → after each peer: {loads or 'n/a'}.",
        "",
        markdown_table(report["peers"]),
        "",
    ])


def write_chart(report: dict, path: Path) -> str | None:
    """Output tokens/s, TTFT p50 (p95 dashed) and goodput against concurrency, one line per peer. Returns None, or
    why no chart was written."""
    plt = _pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    measured = [row for row in report["peers"] if row["status"] == "ok" and row["levels"]]
    if not measured:
        return "no peer was measured"
    slo = report["meta"]["slo"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for row in measured:
        colour = COLOURS.get(row["name"], "#55a868")
        xs = [level["concurrency"] for level in row["levels"]]
        figures = [level_figures(level) for level in row["levels"]]
        nan = float("nan")
        axes[0].plot(xs, [f["tok/s"] or 0.0 for f in figures], "-o", color=colour, label=row["name"])
        axes[1].plot(xs, [f["TTFT p50 ms"] or nan for f in figures], "-o", color=colour, label=f"{row['name']} p50")
        axes[1].plot(xs, [f["TTFT p95 ms"] or nan for f in figures], "--^", color=colour, label=f"{row['name']} p95")
        axes[2].plot(xs, [100.0 * (f["goodput"] or 0.0) for f in figures], "-o", color=colour, label=row["name"])
    xs = sorted({level["concurrency"] for row in measured for level in row["levels"]})
    axes[1].axhline(slo["ttft_ms"], color="#c44e52", linewidth=0.8, linestyle=":", label=f"SLO {slo['ttft_ms']:g} ms")
    for ax, label in zip(axes, ("output tokens/s", "TTFT (ms)",
                                f"% of requests with TTFT ≤ {slo['ttft_ms']:g} ms, TPOT ≤ {slo['tpot_ms']:g} ms"),
                         strict=True):
        _load_axis(ax, xs, "concurrency (requests in flight)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    axes[0].set_ylim(bottom=0)
    axes[2].set_ylim(0, 105)
    meta = report["meta"]
    fig.suptitle(f"sluice bench peers — {Path(meta['model_dir']).name}, ≈{meta['prompt_tokens']} prompt / "
                 f"{meta['output_tokens']} output tokens, {meta['started_utc']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
