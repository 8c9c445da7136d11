"""Per-tenant safety policies in the real stack: a policy stored in the stack's database (as `sluice safety policy
set` stores it) reaches the running safety service within its TTL and changes what that tenant — and only that
tenant — may send, through Envoy with the openai SDK."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest

from services.common.db import create_db_engine
from services.common.settings import Settings
from services.safety.policy import SafetyPolicy
from services.safety.policy_db import reset_policy, set_policy

pytestmark = pytest.mark.stack

TENANT = "tenant-safety-policy"
PROMPT = "What is the status of Project Bluebird?"


@pytest.fixture(scope="module")
def tenant_policy(stack: Settings) -> Iterator[SafetyPolicy]:
    policy = SafetyPolicy(id=TENANT, deny_list=(r"\bproject bluebird\b",))
    engine = create_db_engine(stack.db_url)
    set_policy(engine, policy, actor="tests")
    try:
        yield policy
    finally:
        reset_policy(engine, TENANT)
        engine.dispose()


def test_a_tenants_deny_list_blocks_only_that_tenant(stack: Settings, api_key: str, tenant_keys,
                                                     tenant_policy: SafetyPolicy) -> None:
    theirs = openai.OpenAI(base_url=stack.public_base_url, api_key=tenant_keys(TENANT, "enterprise"),
                           max_retries=0, timeout=60)
    others = openai.OpenAI(base_url=stack.public_base_url, api_key=api_key, max_retries=0, timeout=60)
    deadline = time.monotonic() + 20  # the safety service re-reads policies every 5 s
    while True:
        try:
            theirs.chat.completions.create(model=stack.model_name, max_tokens=2,
                                           messages=[{"role": "user", "content": PROMPT}])
        except openai.BadRequestError as caught:
            error = caught.body
            break
        if time.monotonic() > deadline:
            pytest.fail("the tenant's policy never reached the safety service")
        time.sleep(0.5)
    assert error["code"] == "content_policy_violation" and "deny_list" in error["message"]
    completion = others.chat.completions.create(model=stack.model_name, max_tokens=2,
                                                messages=[{"role": "user", "content": PROMPT}])
    assert completion.choices[0].finish_reason in ("stop", "length")
