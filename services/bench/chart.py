"""The benchmarks' PNGs (matplotlib, optional): `sluice bench engine` — output tokens/s by mode and concurrency, one
panel per model; `sluice bench serve` — latency vs load and goodput vs load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

NO_MATPLOTLIB = "matplotlib is not installed (pip install -e '.[bench]')"


def _pyplot() -> Any | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def write_chart(results: dict, path: Path) -> str | None:
    """Writes the chart; returns None, or why no chart was written."""
    plt = _pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    models = results["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.6), squeeze=False)
    colours = {"sequential": "#8c8c8c", "static": "#4c72b0", "inflight": "#dd8452"}
    for ax, (name, figures) in zip(axes[0], models.items(), strict=True):
        throughput = figures["throughput"]
        concurrencies = [int(c) for c in throughput["inflight"]]
        width = 0.27
        for k, mode in enumerate(("sequential", "static", "inflight")):
            values = []
            for c in concurrencies:
                run = throughput[mode].get(str(c))
                values.append(run["output_tokens_per_s"] if run else 0.0)
            xs = [i + (k - 1) * width for i in range(len(concurrencies))]
            bars = ax.bar(xs, values, width, label=mode,
                          color=colours[mode])
            ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
        ax.set_xticks(range(len(concurrencies)), [str(c) for c in concurrencies])
        ax.set_xlabel("concurrency (requests kept in flight)")
        ax.set_ylabel("output tokens/s")
        source = "checkpoint" if figures["source"].startswith("checkpoint") else "random weights"
        ax.set_title(f"{name}: {figures['params_m']:.1f}M params, {source}", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    meta = results["meta"]
    low, high = next(iter(models.values())).get("profile", {}).get("output_len", ("?", "?"))
    fig.suptitle(f"sluice bench engine — output {low}–{high} tokens, threads={meta['torch_threads']}, "
                 f"{meta['started_utc']}{' (quick)' if meta['quick'] else ''}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _serve_series(report: dict) -> tuple[str, list[float], dict[str, list[dict]]]:
    """The load axis (its name and values) and, per target, each level's figures."""
    levels = report["levels"]
    axis = next(iter(levels[0]["load"]))
    xs = [level["load"][axis] for level in levels]
    if "targets" in levels[0]:  # an overhead run: every target at every level
        series = {name: [level["targets"][name] for level in levels] for name in levels[0]["targets"]}
    else:
        series = {report["meta"]["targets"][0]: levels}
    return axis, xs, series


def _load_axis(ax: Any, xs: list[float], label: str) -> None:
    """Levels usually grow geometrically (1, 4, 16, 64): a log axis spaces them evenly; ticks at the levels."""
    if len(xs) > 2 and min(xs) > 0 and max(xs) / min(xs) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)


def write_serve_charts(report: dict, out_dir: Path) -> dict[str, str]:
    """`serve_latency.png` (TTFT, TPOT and end-to-end p50/p99 against load) and `serve_goodput.png` (request
    throughput and goodput against load, with the share of requests meeting both SLOs); returns the file names, or
    {"skipped": why}."""
    plt = _pyplot()
    if plt is None:
        return {"skipped": NO_MATPLOTLIB}
    axis, xs, series = _serve_series(report)
    meta = report["meta"]
    xlabel = "concurrency (sessions in flight)" if axis == "concurrency" else "arrival rate (sessions/s, Poisson)"
    title = (f"sluice bench serve — {meta['workload']}, prompt {meta['prompt_len']} / output {meta['output_len']} "
             f"tokens, {meta['model']}, {meta['started_utc']}")
    colours = {"http": "#dd8452", "grpc": "#55a868", "triton": "#4c72b0"}

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    slo = meta["slo"]
    for ax, metric, label, limit in ((axes[0], "ttft_ms", "TTFT (ms)", slo["ttft_ms"]),
                                     (axes[1], "tpot_ms", "TPOT (ms)", slo["tpot_ms"]),
                                     (axes[2], "e2e_ms", "end-to-end latency (ms)", None)):
        for name, levels in series.items():
            colour = colours.get(name, "#8c8c8c")
            for q, style in (("p50", "-o"), ("p99", "--^")):
                ys = [level[metric][q] if level[metric][q] is not None else float("nan") for level in levels]
                ax.plot(xs, ys, style, color=colour, label=f"{name} {q}", markersize=4)
        if limit is not None:
            ax.axhline(limit, color="#c44e52", linewidth=0.8, linestyle=":", label=f"SLO {limit:g} ms")
        _load_axis(ax, xs, xlabel)
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title} — latency vs load", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "serve_latency.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.6))
    share_ax = ax.twinx()
    for name, levels in series.items():
        colour = colours.get(name, "#8c8c8c")
        ax.plot(xs, [level["request_throughput"] or 0.0 for level in levels], "-o", color=colour,
                label=f"{name} throughput", markersize=4)
        ax.plot(xs, [level["goodput"]["requests_per_s"] or 0.0 for level in levels], "--s", color=colour,
                label=f"{name} goodput", markersize=4)
        share_ax.plot(xs, [100.0 * (level["goodput"]["fraction"] or 0.0) for level in levels], ":", color=colour,
                      label=f"{name} % meeting SLOs")
    _load_axis(ax, xs, xlabel)
    ax.set_ylabel("requests/s")
    share_ax.set_ylabel(f"% of requests with TTFT ≤ {slo['ttft_ms']:g} ms and TPOT ≤ {slo['tpot_ms']:g} ms")
    share_ax.set_ylim(0, 105)
    lines = ax.get_legend_handles_labels()
    shares = share_ax.get_legend_handles_labels()
    ax.legend(lines[0] + shares[0], lines[1] + shares[1], fontsize=7, loc="upper left")
    fig.suptitle(f"{title} — goodput vs load", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "serve_goodput.png", dpi=110)
    plt.close(fig)
    return {"latency": "serve_latency.png", "goodput": "serve_goodput.png"}
