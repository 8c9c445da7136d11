"""The benchmark's PNG: output tokens/s by mode and concurrency, one panel per model (matplotlib, optional)."""

from __future__ import annotations

from pathlib import Path


def write_chart(results: dict, path: Path) -> str | None:
    """Writes the chart; returns None, or why no chart was written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
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
