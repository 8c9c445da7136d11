"""One hostile tenant must not hurt another (issue S11), through Envoy and the real stack: while a free-tier key
floods max-size prompts, malformed bodies, bad keys and unread streams, an enterprise tenant keeps ≥ 99% success at
≤ 2× its own baseline p50 latency, and the attacker only ever gets 400/413/429 (bad keys: 401)."""

from __future__ import annotations

import json
import os
import time

import pytest

from services.bench.abuse import AbuseConfig, run_async
from services.common.settings import Settings
from tests.conftest import engine_metric

pytestmark = pytest.mark.stack


def test_a_hostile_free_tenant_does_not_hurt_an_enterprise_tenant(stack: Settings, tenant_keys) -> None:
    import asyncio

    config = AbuseConfig(model=stack.model_name, attacker_model="sluice-small",
                         baseline_s=float(os.environ.get("SLUICE_ABUSE_BASELINE_S", 6)),
                         attack_s=float(os.environ.get("SLUICE_ABUSE_ATTACK_S", 20)),
                         huge_rate=10, malformed_rate=10, bad_key_rate=10, unread_streams=30)
    victim, attacker = tenant_keys("abuse-victim", "enterprise"), tenant_keys("abuse-attacker", "free")
    report = asyncio.run(run_async(stack.public_base_url, victim, attacker, config))
    print(json.dumps(report, indent=2))  # the figures, for the note
    assert report["attacker_unexpected_statuses"] == {}
    assert report["attacker"]["huge"].get("400", 0) > 0 and report["attacker"]["bad_key"].get("401", 0) > 0
    streams = report["attacker"]["unread_stream"]
    # the free tier's 20 RPM (a token bucket: one more every 3 s) admits about 20; the rest are refused with 429
    assert report["unread_streams_admitted"] <= 20 + config.attack_s / 3 and streams.get("429", 0) > 0
    assert report["attacked"]["success"] >= 0.99
    deadline = time.monotonic() + 30  # the attacker's streams closed: nothing of theirs stays in the engine
    while engine_metric(stack, "sluice_engine_requests_running") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert engine_metric(stack, "sluice_engine_requests_running") == 0
    assert engine_metric(stack, "sluice_engine_kv_blocks_used") == 0
    assert report["p50_factor"] <= 2.0
