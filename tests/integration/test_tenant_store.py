"""Tenants, keys, usage and audit on both databases: SQLite (the default) and the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, select, text

from services.common.db import create_db_engine
from services.orchestrator.migrations import alembic_config, current_revision, migrate
from services.orchestrator.tenancy.audit import AuditLog
from services.orchestrator.tenancy.models import ApiKeyRow, AuditRow, UsageRow
from services.orchestrator.tenancy.retention import delete_user, export_user, purge_expired
from services.orchestrator.tenancy.store import TenancyError, TenantStore
from services.orchestrator.tenancy.tiers import Limits
from services.orchestrator.tenancy.usage import UsageLog, UsageRecord
from tests.integration.postgres import pg_url  # noqa: F401  (fixture)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tenancy.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def engine(db_url: str):
    migrate(db_url)
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


def test_migrations_upgrade_downgrade_and_upgrade_again(db_url: str) -> None:
    from alembic import command

    migrate(db_url)
    assert current_revision(db_url) is not None
    engine = create_db_engine(db_url)
    tables = set(inspect(engine).get_table_names())
    assert {"tenants", "users", "api_keys", "usage_records", "audit_events"} <= tables
    with engine.connect() as connection:
        config = alembic_config(db_url)
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")
        connection.commit()
    assert "api_keys" not in set(inspect(engine).get_table_names())
    engine.dispose()
    migrate(db_url)
    assert current_revision(db_url) is not None and "api_keys" in inspect(create_db_engine(db_url)).get_table_names()


def test_keys_are_shown_once_stored_hashed_and_revocable(engine) -> None:
    store = TenantStore(engine)
    created = store.create_key("acme", tier="plus", name="ci", limits=Limits(rpm=7))
    assert created.tenant_created and created.plaintext.startswith("sk-sluice-")
    principal = store.authenticate(created.plaintext)
    assert principal is not None and principal.tenant_id == "acme" and principal.tier.name == "plus"
    assert principal.key_limits.rpm == 7 and principal.key_limits.tpm == principal.tier.limits.tpm
    with engine.connect() as connection:  # the key is nowhere in the database, only its salted hash
        for table in ("api_keys", "audit_events", "tenants"):
            for row in connection.execute(text(f"SELECT * FROM {table}")):
                assert all(created.plaintext not in str(value) for value in row)
    tampered = created.plaintext[:-1] + ("A" if created.plaintext[-1] != "A" else "B")
    assert store.authenticate(tampered) is None
    assert store.authenticate("sk-sluice-short") is None
    store.revoke_key(created.row.prefix)
    assert store.authenticate(created.plaintext) is None
    events = [row.event for row in reversed(AuditLog(engine).list(tenant_id="acme"))]
    assert events == ["tenant.created", "key.created", "key.revoked"]
    # a key can belong to a user of the tenant, created on first use
    alice = [store.create_key("acme", user="alice").row.user_id for _ in range(2)]
    assert alice[0] is not None and alice[0] == alice[1] != store.create_key("acme", user="bob").row.user_id


def test_bad_names_and_tiers_are_refused_and_change_nothing(engine) -> None:
    store = TenantStore(engine)
    before = (len(store.list_tenants()), len(store.list_keys()))
    with pytest.raises(TenancyError):
        store.create_key("bad name")
    with pytest.raises(ValueError):
        store.create_key("new-tenant", tier="platinum")
    assert (len(store.list_tenants()), len(store.list_keys())) == before
    assert store.get_tenant("new-tenant") is None


def _usage(tenant: str, user: str | None, prompt: int, completion: int, status: str = "ok") -> UsageRecord:
    return UsageRecord(request_id="r", tenant_id=tenant, key_id=None, user_id=user, endpoint="chat.completions",
                       model="sluice-demo", deployment="sluice-demo-v1", prompt_tokens=prompt,
                       completion_tokens=completion, cached_prompt_tokens=0, status=status, http_status=200,
                       ttft_ms=10.0, latency_ms=20.0)


def test_usage_report_sums_per_tenant_day_and_model(engine) -> None:
    log = UsageLog(engine)
    for record in (_usage("a", "u1", 10, 5), _usage("a", "u2", 7, 3, "cancelled"), _usage("b", None, 1, 1)):
        log.write(record)
    [line] = log.report(tenant_id="a")
    assert (line.requests, line.prompt_tokens, line.completion_tokens, line.cancelled) == (2, 17, 8, 1)


def test_retention_purges_only_old_rows_of_tenants_that_set_one(engine) -> None:
    store = TenantStore(engine)
    store.create_tenant("short")
    store.create_tenant("forever")
    store.update_tenant("short", retention_days=30)
    log = UsageLog(engine)
    old = datetime.now(UTC) - timedelta(days=31)
    with engine.begin() as connection:
        for tenant in ("short", "forever"):
            row = _usage(tenant, "u", 1, 1).row(at=old)
            connection.execute(UsageRow.__table__.insert().values(
                {c.name: getattr(row, UsageRow.__mapper__.get_property_by_column(c).key)
                 for c in UsageRow.__table__.columns}))
    log.write(_usage("short", "u", 2, 2))  # recent: kept
    report = purge_expired(engine)
    assert report["short"]["usage_records"] == 1 and "forever" not in report
    kept = [(r.tenant_id, r.prompt_tokens) for r in log.records() if r.tenant_id in ("short", "forever")]
    assert sorted(kept) == [("forever", 1), ("short", 2)]
    with engine.connect() as connection:
        assert connection.scalar(select(AuditRow.event).where(AuditRow.event == "data.purged")) == "data.purged"


def test_user_export_and_delete(engine) -> None:
    log = UsageLog(engine)
    log.write(_usage("t", "alice", 3, 4))
    log.write(_usage("t", "bob", 1, 1))
    exported = export_user(engine, "t", "alice")
    assert [(u["prompt_tokens"], u["completion_tokens"]) for u in exported["usage_records"]] == [(3, 4)]
    assert delete_user(engine, "t", "alice")["usage_records"] == 1
    assert [r.user_id for r in log.records(tenant_id="t")] == ["bob"]
    with engine.connect() as connection:
        details = connection.scalar(select(AuditRow.details).where(AuditRow.event == "data.deleted"))
    assert "alice" not in details  # the audit event names the user by hash only


def test_api_key_rows_keep_no_plaintext_column() -> None:
    assert {c.name for c in ApiKeyRow.__table__.columns} >= {"salt", "secret_hash", "prefix"}
    assert not {"key", "secret", "plaintext"} & {c.name for c in ApiKeyRow.__table__.columns}
