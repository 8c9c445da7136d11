"""`sluice bench overload`: what admission control buys at twice the saturating load, measured in one run.

1. Saturation: Poisson arrivals through Envoy with admission control off, the rate stepped up (×`rate_factor`)
   until the stack stops keeping up: goodput under 90%, or completions falling behind arrivals (`pace`, completions
   per second over the realised arrival rate, under 0.8: throughput stopped growing with the offered load). The
   saturating rate is the last step that kept up. (Completions per second of wall time against the nominal rate
   would be too noisy in short steps: the realised span of a dozen Poisson arrivals varies by a third.)
2. Overload: `overload_factor` × that rate, in phases with admission control on and off (ABBA order over `rounds`,
   the same arrival times and lengths for both modes within a round, other words so neither gets the other's prefix
   cache hits). Requests come from three tenants, one per tier, in turn.

Both modes run through their own orchestrator + Envoy in front of the same stack (services/bench/overload_stack.py).
Reported per mode: goodput of admitted requests (admitted requests meeting both SLOs / admitted), total goodput
(good requests per second of phase wall time) and the on/off ratio, shed fraction per tier, the Retry-After values
sent, and the orchestrator's own `sluice_admission_shed_total`. Targets (issue S8): admitted goodput ≥ 90% and
total goodput ≥ 1.5× admission off.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from engine.tokenizer import ChatTokenizer
from services.bench.metrics import percentile
from services.bench.overload_stack import MODES, FrontEnd, start_front_end
from services.bench.serve import Runner, _context_window
from services.bench.serve_metrics import RequestRecord, Slo, summarize_requests
from services.bench.serve_targets import HttpTarget
from services.bench.serve_workload import LengthDist, Session, build_sessions
from services.common.settings import Settings

TIERS = ("free", "plus", "enterprise")
KEEP_UP_GOODPUT = 0.9  # a saturation step keeps up while goodput and pace stay at or above these
KEEP_UP_PACE = 0.8
ADMITTED_GOODPUT_TARGET = 0.9
GOODPUT_RATIO_TARGET = 1.5


@dataclass(frozen=True, slots=True)
class OverloadConfig:
    model: str | None = None  # default: the stack's model
    start_rate: float = 1.0  # requests per second at the first saturation step
    rate_factor: float = 1.5
    max_steps: int = 7
    step_s: float = 10.0  # seconds of arrivals per saturation step
    saturating_rate: float | None = None  # given: skip the search
    overload_factor: float = 2.0
    phase_s: float = 30.0  # seconds of arrivals per on/off phase
    rounds: int = 2  # on/off pairs
    prompt_len: LengthDist = field(default_factory=lambda: LengthDist.parse("16:48"))
    output_len: LengthDist = field(default_factory=lambda: LengthDist.parse("16"))
    slo: Slo = field(default_factory=Slo)
    warmup: int = 3  # sequential requests per front end before measuring
    seed: int = 0

    def __post_init__(self) -> None:
        if self.start_rate <= 0 or self.rate_factor <= 1 or self.max_steps < 1 or self.step_s <= 0:
            raise ValueError("overload: start rate and step length must be positive, the rate factor above 1")
        if self.overload_factor <= 0 or self.phase_s <= 0 or self.rounds < 1:
            raise ValueError("overload: the overload factor, phase length and rounds must be positive")


class MixedTierTarget:
    """Sends each session with the key of its tier: free, plus and enterprise in turn by session index."""

    name = "http"

    def __init__(self, base_url: str, model: str, keys: dict[str, str]) -> None:
        self.targets = {tier: HttpTarget(base_url, model, key) for tier, key in keys.items()}

    @staticmethod
    def tier_of(session: int) -> str:
        return TIERS[session % len(TIERS)]

    async def send(self, messages: list[dict[str, str]], output_len: int, record: RequestRecord) -> None:
        await self.targets[self.tier_of(record.session)].send(messages, output_len, record)

    async def close(self) -> None:
        for target in self.targets.values():
            await target.close()


def create_tier_keys(settings: Settings) -> dict[str, str]:
    """One tenant per tier in the stack's database, and a fresh key for each."""
    from services.common.db import create_db_engine
    from services.orchestrator.tenancy.store import TenantStore

    engine = create_db_engine(settings.db_url)
    try:
        store = TenantStore(engine)
        return {tier: store.create_key(f"bench-overload-{tier}", tier=tier, name="bench overload").plaintext
                for tier in TIERS}
    finally:
        engine.dispose()


def _shed(record: RequestRecord) -> bool:
    return record.http_status == 503


def phase_figures(records: list[RequestRecord], wall_s: float, slo: Slo) -> dict[str, object]:
    """Admission-centred figures of one phase (or of a mode's phases together)."""
    admitted = [r for r in records if not _shed(r)]
    good = [r for r in admitted if r.meets(slo)]
    per_tier = {}
    for tier in TIERS:
        sent = [r for r in records if MixedTierTarget.tier_of(r.session) == tier]
        tier_admitted = [r for r in sent if not _shed(r)]
        per_tier[tier] = {
            "sent": len(sent), "shed": len(sent) - len(tier_admitted),
            "shed_fraction": round((len(sent) - len(tier_admitted)) / len(sent), 4) if sent else None,
            "admitted_goodput": (round(sum(r.meets(slo) for r in tier_admitted) / len(tier_admitted), 4)
                                 if tier_admitted else None)}
    retry = [r.retry_after_s for r in records if _shed(r) and r.retry_after_s is not None]
    return {
        "sent": len(records), "admitted": len(admitted), "shed": len(records) - len(admitted),
        "shed_overloaded": sum(_shed(r) and "overloaded" in (r.error or "") for r in records),
        "failed_after_admission": sum(not r.ok for r in admitted), "good": len(good),
        "admitted_goodput": round(len(good) / len(admitted), 4) if admitted else None,
        "goodput_per_s": round(len(good) / wall_s, 4) if wall_s > 0 else None,
        "wall_s": round(wall_s, 3),
        "per_tier": per_tier,
        "retry_after_s": {"count": len(retry), "p50": percentile(retry, 50), "p95": percentile(retry, 95),
                          "max": max(retry) if retry else None,
                          "histogram": {str(int(v)): n for v, n in sorted(Counter(retry).items())}},
        "serve": summarize_requests(admitted, wall_s, slo),  # latency figures of what was admitted
    }


def pace(records: list[RequestRecord]) -> float | None:
    """Completions per second (first arrival to last completion) over the realised arrival rate (first to last
    arrival); about 1 while the stack keeps up, lower as a backlog builds. None without two arrivals."""
    done = [r for r in records if r.ok and r.end is not None]
    starts = sorted(r.start for r in records)
    if not done or len(starts) < 2 or starts[-1] <= starts[0]:
        return None
    arrival_rate = (len(starts) - 1) / (starts[-1] - starts[0])
    completion_rate = len(done) / (max(r.end for r in done) - starts[0])
    return round(min(1.0, completion_rate / arrival_rate), 4)


def shed_counter(front: FrontEnd) -> dict[str, float]:
    """`sluice_admission_shed_total` from the front end's orchestrator, as {"tier/outcome": count}."""
    try:
        text = httpx.get(front.metrics_url, timeout=5).text
    except httpx.HTTPError:
        return {}
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("sluice_admission_shed_total{"):
            labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.index("}")].split(","))
            counts[f"{labels['tier'].strip(chr(34))}/{labels['outcome'].strip(chr(34))}"] += float(line.split()[-1])
    return dict(counts)


class OverloadBench:
    def __init__(self, settings: Settings, config: OverloadConfig, tokenizer: ChatTokenizer,
                 runners: dict[str, Runner]) -> None:
        self.settings = settings
        self.config = config
        self.tokenizer = tokenizer
        self.runners = runners  # by mode: "on", "off"
        self.context_window = _context_window(settings.model_dir)

    def sessions(self, rate: float, seconds: float, seed: int, variant: str) -> list[Session]:
        count = max(len(TIERS), round(rate * seconds))
        return build_sessions("random", count, self.tokenizer, prompt_len=self.config.prompt_len,
                              output_len=self.config.output_len, system_len=0, turns=1, seed=seed,
                              context_window=self.context_window, variant=variant)

    async def level(self, mode: str, rate: float, seconds: float, seed: int,
                    variant: str) -> tuple[list[RequestRecord], float]:
        sessions = self.sessions(rate, seconds, seed, variant)
        return await self.runners[mode].level(sessions, ("rate", rate), random.Random(seed))

    async def warm_up(self) -> None:
        for mode, runner in self.runners.items():
            for session in self.sessions(1.0, float(self.config.warmup), self.config.seed, f"warm-up/{mode}"):
                await runner.session(Session(len(TIERS) - 1, session.system, session.turns))  # enterprise key

    async def find_saturation(self) -> tuple[float, list[dict[str, object]]]:
        config, steps = self.config, []
        rate, saturating = config.start_rate, None
        for step in range(config.max_steps):
            records, wall = await self.level("off", rate, config.step_s, config.seed + 100 + step, f"step-{step}")
            figures = summarize_requests(records, wall, config.slo)
            step_pace = pace(records)
            kept_up = ((figures["goodput"]["fraction"] or 0) >= KEEP_UP_GOODPUT
                       and step_pace is not None and step_pace >= KEEP_UP_PACE)
            steps.append({"rate": round(rate, 4), "kept_up": kept_up, "pace": step_pace,
                          "request_throughput": figures["request_throughput"],
                          "goodput_fraction": figures["goodput"]["fraction"],
                          "goodput_per_s": figures["goodput"]["requests_per_s"],
                          "ttft_ms": figures["ttft_ms"], "tpot_ms": figures["tpot_ms"], "errors": figures["errors"],
                          "loadavg_1m": os.getloadavg()[0]})  # the machine is shared: how busy it was
            if not kept_up:
                break
            saturating = rate
            rate *= config.rate_factor
        return (saturating if saturating is not None else config.start_rate), steps

    async def compare(self, rate: float) -> dict[str, object]:
        config = self.config
        collected: dict[str, list[RequestRecord]] = {mode: [] for mode in MODES}
        walls = dict.fromkeys(MODES, 0.0)
        phases = []
        for round_index in range(config.rounds):
            order = MODES if round_index % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                seed = config.seed + 1000 + round_index  # same arrivals and lengths for both modes in a round
                records, wall = await self.level(mode, rate, config.phase_s, seed, f"{mode}-{round_index}")
                collected[mode] += records
                walls[mode] += wall
                figures = phase_figures(records, wall, config.slo)
                phases.append({"round": round_index, "mode": mode,
                               **{k: figures[k] for k in ("sent", "admitted", "shed", "good", "admitted_goodput",
                                                          "goodput_per_s", "wall_s")},
                               "loadavg_1m": os.getloadavg()[0]})
        modes = {mode: phase_figures(collected[mode], walls[mode], config.slo) for mode in MODES}
        on, off = modes["on"], modes["off"]
        ratio = (round(on["goodput_per_s"] / off["goodput_per_s"], 4)
                 if on["goodput_per_s"] is not None and off["goodput_per_s"] else None)
        return {"rate": round(rate, 4), "modes": modes, "phases": phases, "goodput_ratio_on_off": ratio,
                "meets_targets": {
                    "admitted_goodput_ge_0_9": (on["admitted_goodput"] or 0) >= ADMITTED_GOODPUT_TARGET,
                    "goodput_ratio_ge_1_5": ratio is not None and ratio >= GOODPUT_RATIO_TARGET}}


async def _run(settings: Settings, config: OverloadConfig, tokenizer: ChatTokenizer,
               fronts: dict[str, FrontEnd], keys: dict[str, str]) -> dict[str, object]:
    model = config.model or settings.model_name
    runners = {mode: Runner(MixedTierTarget(front.base_url, model, keys), tokenizer) for mode, front in fronts.items()}
    bench = OverloadBench(settings, config, tokenizer, runners)
    try:
        await bench.warm_up()
        if config.saturating_rate is not None:
            saturating, steps = config.saturating_rate, []
        else:
            saturating, steps = await bench.find_saturation()
        overload = await bench.compare(config.overload_factor * saturating)
    finally:
        for runner in runners.values():
            await runner.target.close()
    # found: a step failed to keep up; if none did, the saturating rate is only a lower bound (add steps)
    found = any(not step["kept_up"] for step in steps) if steps else None
    return {"saturation": {"saturating_rate": round(saturating, 4), "found": found, "steps": steps},
            "overload": overload}


def run(settings: Settings, config: OverloadConfig, results_dir: Path) -> dict[str, object]:
    """Starts the two front ends next to the running stack, runs both phases, writes `overload.json`."""
    model = config.model or settings.model_name
    tokenizer = ChatTokenizer.from_pretrained(settings.model_dir)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    keys = create_tier_keys(settings)
    results_dir.mkdir(parents=True, exist_ok=True)
    fronts: dict[str, FrontEnd] = {}
    try:
        for mode in MODES:
            fronts[mode] = start_front_end(settings, mode, model, results_dir / "front-ends")
        report = asyncio.run(_run(settings, config, tokenizer, fronts, keys))
        report["orchestrator_shed_counter"] = {mode: shed_counter(front) for mode, front in fronts.items()}
    finally:
        for front in fronts.values():
            front.stop()
    meta = {**{k: v for k, v in asdict(config).items() if k not in ("slo", "prompt_len", "output_len")},
            "prompt_len": str(config.prompt_len), "output_len": str(config.output_len), "model": model,
            "tiers": list(TIERS), "started_utc": started,
            "slo": {"ttft_ms": config.slo.ttft_ms, "tpot_ms": config.slo.tpot_ms}}
    report = {"meta": meta, **report}
    (results_dir / "overload.json").write_text(json.dumps(report, indent=2))
    return report
