"""The conversation store and its migrations against real databases: a SQLite file and PostgreSQL (a fresh database
created for the run in the server at 127.0.0.1:5432 and dropped afterwards)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, inspect, text
from sqlalchemy.exc import IntegrityError

from services.common.db import create_db_engine
from services.common.errors import ApiError
from services.orchestrator.conversations.store import ConversationStore
from services.orchestrator.migrations import alembic_config, current_revision, migrate
from tests.integration.postgres import pg_url  # noqa: F401  (fixture)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sluice.db'}"
        return
    # One database per run; each test starts from an empty database (every migration's tables dropped).
    url = request.getfixturevalue("pg_url")
    engine = create_db_engine(url)
    tables = MetaData()
    tables.reflect(engine)
    tables.drop_all(engine)
    engine.dispose()
    yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    migrate(db_url)
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> ConversationStore:
    return ConversationStore(engine)


def test_migrations_create_the_schema_and_are_idempotent(db_url: str) -> None:
    assert current_revision(db_url) is None
    migrate(db_url)
    migrate(db_url)  # a second start against an up-to-date database changes nothing
    assert current_revision(db_url) == ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
    engine = create_db_engine(db_url)
    try:
        schema = inspect(engine)
        assert {"conversations", "messages", "alembic_version"} <= set(schema.get_table_names())
        columns = {c["name"] for c in schema.get_columns("messages")}
        assert {"conversation_id", "position", "role", "content", "status", "prompt_tokens", "completion_tokens",
                "finish_reason", "created_at"} <= columns
        uniques = [set(u["column_names"]) for u in schema.get_unique_constraints("messages")]
        assert {"conversation_id", "position"} in uniques
        (fk,) = schema.get_foreign_keys("messages")
        assert fk["referred_table"] == "conversations" and fk["options"].get("ondelete") == "CASCADE"
    finally:
        engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def test_create_append_get_keeps_messages_in_order(store: ConversationStore) -> None:
    created = store.create("default", "sluice-demo", user_id="u1", title="t", system_prompt="Be brief.")
    assert created.messages == [] and created.system_prompt == "Be brief."
    store.append_message("default", created.id, "user", "Hi, my name is Talia.", prompt_tokens=7)
    store.append_message("default", created.id, "assistant", "Hello Talia!", prompt_tokens=20, completion_tokens=4,
                         finish_reason="stop")
    store.append_message("default", created.id, "user", "What is my name?", prompt_tokens=5)
    store.append_message("default", created.id, "assistant", "Your na", status="incomplete", prompt_tokens=33,
                         completion_tokens=3)
    got = store.get("default", created.id)
    assert [(m.position, m.role, m.content, m.status) for m in got.messages] == [
        (0, "user", "Hi, my name is Talia.", "complete"),
        (1, "assistant", "Hello Talia!", "complete"),
        (2, "user", "What is my name?", "complete"),
        (3, "assistant", "Your na", "incomplete"),
    ]
    assert (got.messages[1].prompt_tokens, got.messages[1].completion_tokens) == (20, 4)
    assert got.messages[1].finish_reason == "stop" and got.messages[3].finish_reason is None
    assert got.updated_at >= got.created_at and got.updated_at == got.messages[-1].created_at
    assert got.created_at.tzinfo is not None


def test_list_is_newest_first_paginated_and_scoped(store: ConversationStore) -> None:
    ids = []
    for i in range(5):
        ids.append(store.create("default", "m", user_id="alice" if i % 2 == 0 else "bob", title=str(i)).id)
        time.sleep(0.002)
    store.create("other-tenant", "m", user_id="alice")
    store.append_message("default", ids[1], "user", "bump")  # activity makes it the newest
    order = [ids[1], ids[4], ids[3], ids[2], ids[0]]
    first, token = store.list("default", page_size=2)
    assert [c.id for c in first] == order[:2] and token
    second, token = store.list("default", page_size=2, page_token=token)
    third, last = store.list("default", page_size=2, page_token=token)
    assert [c.id for c in second + third] == order[2:] and last is None
    alice, _ = store.list("default", user_id="alice")
    assert [c.id for c in alice] == [ids[4], ids[2], ids[0]]
    with pytest.raises(ApiError) as info:
        store.list("default", page_token="not-a-cursor")
    assert info.value.status == 400
    with pytest.raises(ApiError):
        store.list("default", page_size=0)


def test_other_tenants_and_unknown_ids_are_not_found(store: ConversationStore) -> None:
    mine = store.create("tenant-a", "m")
    for call in (lambda: store.get("tenant-b", mine.id), lambda: store.delete("tenant-b", mine.id),
                 lambda: store.append_message("tenant-b", mine.id, "user", "x"),
                 lambda: store.get("tenant-a", "no-such-id")):
        with pytest.raises(ApiError) as info:
            call()
        assert info.value.status == 404 and info.value.code == "conversation_not_found"
    assert store.get("tenant-a", mine.id).id == mine.id


def test_delete_removes_the_conversation_and_cascades_to_messages(store: ConversationStore, engine: Engine) -> None:
    doomed = store.create("default", "m")
    kept = store.create("default", "m")
    for target in (doomed, kept):
        store.append_message("default", target.id, "user", "hello")
        store.append_message("default", target.id, "assistant", "hi")
    store.delete("default", doomed.id)
    with pytest.raises(ApiError):
        store.get("default", doomed.id)
    with pytest.raises(ApiError):
        store.delete("default", doomed.id)
    with engine.connect() as connection:
        counts = dict(connection.execute(text(
            "SELECT conversation_id, COUNT(*) FROM messages GROUP BY conversation_id")).all())
    assert counts == {kept.id: 2}


def test_schema_rejects_duplicate_positions_and_bad_status(store: ConversationStore, engine: Engine) -> None:
    conversation = store.create("default", "m")
    store.append_message("default", conversation.id, "user", "first")
    insert = text("INSERT INTO messages (id, conversation_id, position, role, content, status, created_at) "
                  "VALUES (:id, :cid, :pos, 'user', 'x', :status, CURRENT_TIMESTAMP)")
    for position, status in ((0, "complete"), (1, "bogus")):
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert, {"id": str(uuid.uuid4()), "cid": conversation.id, "pos": position,
                                        "status": status})
    with pytest.raises(ValueError):
        store.append_message("default", conversation.id, "user", "x", status="bogus")


def test_concurrent_appends_get_consecutive_positions(store: ConversationStore) -> None:
    conversation = store.create("default", "m")

    def append(i: int) -> int:
        return store.append_message("default", conversation.id, "user", f"message {i}").position

    with ThreadPoolExecutor(8) as pool:
        positions = sorted(pool.map(append, range(32)))
    assert positions == list(range(32))
