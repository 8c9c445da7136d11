"""The `sluice bench abuse` subcommand (imports stay lazy so `sluice --help` does not load the benchmark)."""

from __future__ import annotations

import argparse
import json
import sys


def register(bench_sub: argparse._SubParsersAction) -> None:
    abuse = bench_sub.add_parser(
        "abuse", help="one hostile free-tier tenant floods max-size prompts, malformed bodies, bad keys and unread "
        "streams while an enterprise tenant is measured (needs `sluice up`): success and p50 vs its baseline")
    abuse.add_argument("--model", default=None, help="the victim's model (default: the stack's model)")
    abuse.add_argument("--attacker-model", default="sluice-small", help="a model the free tier may use")
    abuse.add_argument("--baseline-s", type=float, default=15.0, help="seconds of victim-only load first")
    abuse.add_argument("--attack-s", type=float, default=60.0, help="seconds of the hostile tenant's attack")
    abuse.add_argument("--victim-concurrency", type=int, default=2, help="the victim tenant's concurrent streams")
    abuse.add_argument("--huge-rate", type=float, default=20.0, help="max-size prompts per second")
    abuse.add_argument("--malformed-rate", type=float, default=20.0, help="malformed bodies per second")
    abuse.add_argument("--bad-key-rate", type=float, default=20.0, help="requests with random keys per second")
    abuse.add_argument("--unread-streams", type=int, default=40, help="streams opened and never read")
    abuse.add_argument("--victim-key", default=None, help="an enterprise key (default: one made for tenant "
                       "abuse-victim)")
    abuse.add_argument("--attacker-key", default=None, help="a free-tier key (default: one made for tenant "
                       "abuse-attacker)")
    abuse.add_argument("--results", default="results/abuse", help="output folder (default results/abuse)")
    abuse.set_defaults(func=main)


def _key(settings, tenant: str, tier: str) -> str:
    from services.common.db import create_db_engine
    from services.orchestrator.tenancy.store import TenantStore

    engine = create_db_engine(settings.db_url)
    try:
        return TenantStore(engine).create_key(tenant, tier=tier, name="bench abuse").plaintext
    finally:
        engine.dispose()


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from services.bench.abuse import AbuseConfig, run
    from services.common.settings import Settings

    settings = Settings.from_env()
    config = AbuseConfig(model=args.model or settings.model_name, attacker_model=args.attacker_model,
                         baseline_s=args.baseline_s, attack_s=args.attack_s,
                         victim_concurrency=args.victim_concurrency, huge_rate=args.huge_rate,
                         malformed_rate=args.malformed_rate, bad_key_rate=args.bad_key_rate,
                         unread_streams=args.unread_streams)
    victim = args.victim_key or _key(settings, "abuse-victim", "enterprise")
    attacker = args.attacker_key or _key(settings, "abuse-attacker", "free")
    report = run(settings.public_base_url, victim, attacker, config, Path(args.results))
    print(json.dumps({k: report[k] for k in ("baseline", "attacked", "p50_factor", "attacker", "passed")}, indent=2))
    print(f"results in {args.results}/abuse.json", file=sys.stderr)
    return 0 if report["passed"] else 1
