"""Per-tenant safety policies in the database (migration 0003, DbPolicyStore, the admin functions and the CLI) on a
SQLite file and on PostgreSQL (a throwaway database, see postgres.py); plus the safety server answering with them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sluice.v1 import chat_pb2, safety_pb2, safety_pb2_grpc
from sqlalchemy import Engine, inspect, text

from services.common.db import create_db_engine
from services.common.settings import Settings
from services.orchestrator.migrations import current_revision, migrate
from services.safety.classifier_client import LocalClassifier
from services.safety.policy import PolicyAction, PolicyError, PolicyUnavailable, SafetyPolicy, policy_from_dict
from services.safety.policy_db import DbPolicyStore, effective_policy, get_policy, reset_policy, set_policy
from tests.integration.postgres import pg_url  # noqa: F401  (fixture)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sluice.db'}"
        return
    url = request.getfixturevalue("pg_url")  # one database per module; each test starts from an empty schema
    engine = create_db_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


ACME = SafetyPolicy(id="acme", thresholds={"toxicity": 0.95}, actions={"pii.email": "off"},
                    deny_list=(r"\bproject zephyr\b",), fail_mode="flag")


def test_migration_0003_creates_and_drops_the_table(db_url: str, engine: Engine) -> None:
    migrate(db_url, "0002")
    assert not inspect(engine).has_table("safety_policies")
    migrate(db_url, "0003")
    assert current_revision(db_url) == "0003"
    columns = {c["name"]: c for c in inspect(engine).get_columns("safety_policies")}
    assert set(columns) == {"tenant_id", "policy", "updated_at", "updated_by"}
    assert inspect(engine).get_pk_constraint("safety_policies")["constrained_columns"] == ["tenant_id"]
    migrate(db_url, "0003")  # idempotent
    from alembic import command

    from services.orchestrator.migrations import alembic_config

    with engine.connect() as connection:
        config = alembic_config(db_url)
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
        connection.commit()
    inspector = inspect(engine)
    inspector.clear_cache()
    assert not inspector.has_table("safety_policies") and inspector.has_table("tenants")


def test_set_get_replace_and_reset(db_url: str, engine: Engine) -> None:
    migrate(db_url)
    assert get_policy(engine, "acme") is None
    set_policy(engine, ACME, actor="admin@test")
    assert get_policy(engine, "acme") == ACME
    replaced = SafetyPolicy(id="acme", thresholds={"hate": 0.3})
    set_policy(engine, replaced)  # replaces the whole policy, not a merge
    stored = get_policy(engine, "acme")
    assert stored == replaced and stored.action("pii.email") is PolicyAction.REDACT
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT tenant_id, updated_by FROM safety_policies")).all()
    assert [tuple(r) for r in rows] == [("acme", "")]
    assert effective_policy(engine, "acme") == (replaced, "the policy of tenant 'acme'")
    assert effective_policy(engine, "other") == (SafetyPolicy(), "the built-in defaults")
    set_policy(engine, SafetyPolicy(id="default", thresholds={"toxicity": 0.6}))
    policy, source = effective_policy(engine, "other")
    assert policy.threshold("toxicity") == 0.6 and source.startswith("the 'default' policy")
    assert reset_policy(engine, "acme") is True and reset_policy(engine, "acme") is False
    assert get_policy(engine, "acme") is None


def test_store_serves_defaults_until_the_table_exists_then_refreshes_after_the_ttl(db_url: str,
                                                                                   engine: Engine) -> None:
    """The safety service starts before the orchestrator migrates: no table means defaults, not an error."""
    clock = Clock()
    store = DbPolicyStore(engine, ttl_s=5.0, clock=clock)

    async def scenario() -> None:
        assert await store.get("acme") == SafetyPolicy()
        assert (await store.get("")).id == "default"
        migrate(db_url)
        set_policy(engine, ACME)
        clock.now += 4.9
        assert await store.get("acme") == SafetyPolicy()  # still within the TTL
        clock.now += 0.2
        assert await store.get("acme") == SafetyPolicy()  # expired: answered from the copy, refresh started
        await asyncio.sleep(0)
        await store._refresh
        assert await store.get("acme") == ACME
        assert await store.get("someone-else") == SafetyPolicy()
        set_policy(engine, SafetyPolicy(id="default", actions={"sexual_content": "flag"}))
        clock.now += 5.0
        await store.get("x")
        await store._refresh
        fallback = await store.get("someone-else")
        assert fallback.id == "default" and fallback.action("sexual_content") is PolicyAction.FLAG
        assert (await store.get("acme")).action("sexual_content") is PolicyAction.BLOCK  # own row, no merge
        await store.close()

    asyncio.run(scenario())


def test_an_invalid_row_fails_its_tenant_closed(db_url: str, engine: Engine) -> None:
    migrate(db_url)
    set_policy(engine, ACME)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO safety_policies (tenant_id, policy, updated_at, updated_by) "
                                "VALUES ('broken', :p, CURRENT_TIMESTAMP, '')"),
                           {"p": json.dumps({"actions": {"toxicity": "nuke"}})})
    store = DbPolicyStore(engine)

    async def scenario() -> None:
        with pytest.raises(PolicyUnavailable):
            await store.get("broken")
        assert await store.get("acme") == ACME  # other tenants are unaffected

    asyncio.run(scenario())
    with pytest.raises(PolicyError):
        get_policy(engine, "broken")


def test_database_failures_keep_the_last_copy_or_fail_closed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sluice.db'}"
    migrate(url)
    engine = create_db_engine(url)
    set_policy(engine, ACME)
    clock = Clock()
    store = DbPolicyStore(engine, ttl_s=1.0, clock=clock)

    def broken_connect() -> None:
        raise OSError("database unreachable")

    async def scenario() -> None:
        assert await store.get("acme") == ACME
        engine.connect = broken_connect  # type: ignore[method-assign]
        clock.now += 2.0
        assert await store.get("acme") == ACME
        await store._refresh
        assert await store.get("acme") == ACME  # the last good copy stays in use

        cold = DbPolicyStore(engine, clock=clock)  # never loaded: nothing to fall back on
        with pytest.raises(PolicyUnavailable):
            await cold.get("acme")

    asyncio.run(scenario())
    engine.dispose()


def test_cli_set_show_reset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from services.cli.main import main

    monkeypatch.setenv("SLUICE_RUN_DIR", str(tmp_path))
    monkeypatch.delenv("SLUICE_DATABASE_URL", raising=False)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("thresholds: {toxicity: 0.95}\nactions: {pii.email: off, sexual_content: flag}\n"
                           "deny_list: ['\\bproject zephyr\\b']\nfail_mode: flag\n")
    assert main(["safety", "policy", "set", "--tenant", "acme", "--file", str(policy_file)]) == 0
    engine = create_db_engine(Settings.from_env().db_url)
    try:
        stored = get_policy(engine, "acme")
    finally:
        engine.dispose()
    assert stored == policy_from_dict("acme", {"thresholds": {"toxicity": 0.95},
                                               "actions": {"pii.email": "off", "sexual_content": "flag"},
                                               "deny_list": [r"\bproject zephyr\b"], "fail_mode": "flag"})
    capsys.readouterr()
    assert main(["safety", "policy", "show", "--tenant", "acme"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("# acme: the policy of tenant 'acme'")
    assert "toxicity: 0.95" in shown and "pii.email: 'off'" in shown and "hate: block" in shown

    policy_file.write_text("actions: {toxicity: nuke}\n")
    assert main(["safety", "policy", "set", "--tenant", "acme", "--file", str(policy_file)]) == 2
    assert "unknown action 'nuke'" in capsys.readouterr().err
    assert main(["safety", "policy", "reset", "--tenant", "acme"]) == 0
    capsys.readouterr()
    assert main(["safety", "policy", "show", "--tenant", "acme"]) == 0
    assert capsys.readouterr().out.startswith("# acme: the built-in defaults")


def test_safety_server_applies_the_tenants_policy_from_the_database(db_url: str, engine: Engine) -> None:
    """The real gRPC server on port 0, with the in-process classifier (Triton's scorer) and the database store."""
    from services.safety.server import create_server

    migrate(db_url)
    set_policy(engine, ACME)

    async def scenario() -> None:
        settings = Settings(database_url=db_url)
        server, port, service = await create_server(settings, "127.0.0.1:0", classifier=LocalClassifier())
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = safety_pb2_grpc.SafetyStub(channel)

                async def check(text: str, tenant: str) -> safety_pb2.Verdict:
                    return await stub.CheckInput(safety_pb2.CheckInputRequest(
                        messages=[chat_pb2.Message(role="user", content=text)], policy_id=tenant), timeout=10)

                text = "Mail jane.doe@gmail.com the Project Zephyr notes."
                theirs, default = await check(text, "acme"), await check(text, "")
                assert theirs.action == safety_pb2.ACTION_BLOCK and theirs.policy_id == "acme"
                assert [c.category for c in theirs.categories if c.triggered] == ["deny_list"]
                assert "pii.email" not in {c.category for c in theirs.categories}  # "off": not even scored
                assert default.action == safety_pb2.ACTION_REDACT and default.policy_id == "default"
                assert list(default.redacted_text) == ["Mail [EMAIL] the Project Zephyr notes."]

                call = stub.CheckOutput(iter([safety_pb2.OutputChunk(text="About project zephyr: it is ",
                                                                     policy_id="acme"),
                                              safety_pb2.OutputChunk(text="fine.")]), timeout=10)
                decisions = [d async for d in call]
                assert decisions[-1].action == safety_pb2.ACTION_STOP
                assert [c.category for c in decisions[-1].categories] == ["deny_list"]
        finally:
            await server.stop(0)
            await service.close()

    asyncio.run(scenario())


def test_safety_server_fails_closed_when_policies_cannot_be_read(tmp_path: Path) -> None:
    from services.safety.server import create_server

    class Unreadable:
        async def get(self, policy_id: str) -> SafetyPolicy:
            raise PolicyUnavailable("database down")

        async def close(self) -> None:
            return None

    async def scenario() -> None:
        server, port, service = await create_server(Settings(run_dir=tmp_path), "127.0.0.1:0",
                                                    classifier=LocalClassifier(), policies=Unreadable())
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = safety_pb2_grpc.SafetyStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stub.CheckInput(safety_pb2.CheckInputRequest(
                        messages=[chat_pb2.Message(role="user", content="hello")], policy_id="acme"), timeout=10)
                assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    async for _ in stub.CheckOutput(iter([safety_pb2.OutputChunk(text="hi", policy_id="acme")])):
                        pass
                assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await server.stop(0)
            await service.close()

    asyncio.run(scenario())
