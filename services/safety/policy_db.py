"""Per-tenant safety policies in the database (table `safety_policies`, migration 0003), read with a short TTL.

The safety service starts before the orchestrator migrates the database, so a missing table means "no tenant has
a policy of its own yet": everyone gets the defaults until a refresh finds the table. The whole table is read at
once (one row per tenant that changed something) and cached for `ttl_s`; after that, a request is answered from the
cached copy while one background refresh runs, so the database is never on a check's critical path except for the
very first one. A database that cannot be read keeps the last good copy in use; with none, checks fail closed
(PolicyUnavailable → UNAVAILABLE → the orchestrator's 503). A row that does not validate fails its own tenant
closed and is logged by tenant id.

The admin functions at the bottom (`set_policy`, `get_policy`, `reset_policy`) back `sluice safety policy`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Engine, MetaData, String, Table, Text, delete, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from services.safety.policy import (
    DEFAULT_POLICY_ID,
    PolicyError,
    PolicyUnavailable,
    SafetyPolicy,
    policy_from_dict,
    policy_to_dict,
)

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 5.0
RETRY_AFTER_FAILURE_S = 1.0  # before the first successful read, how often a request may try again
TABLE = "safety_policies"

# Mirrors services/orchestrator/migrations/versions/0003_safety_policies.py (the migration owns the schema).
metadata = MetaData()
safety_policies = Table(
    TABLE, metadata,
    Column("tenant_id", String(128), primary_key=True),
    Column("policy", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(128), nullable=False, default=""),
)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    policies: dict[str, SafetyPolicy | PolicyError]  # a row that failed validation keeps its error
    loaded_at: float
    table_exists: bool


def _read(engine: Engine) -> tuple[dict[str, SafetyPolicy | PolicyError], bool]:
    """Every row, validated. Raises SQLAlchemyError when the database cannot be read."""
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(safety_policies.c.tenant_id, safety_policies.c.policy)).all()
    except SQLAlchemyError:
        if not inspect(engine).has_table(TABLE):  # not migrated yet: no tenant has a policy of its own
            return {}, False
        raise
    policies: dict[str, SafetyPolicy | PolicyError] = {}
    for tenant_id, raw in rows:
        try:
            policies[tenant_id] = policy_from_dict(tenant_id, json.loads(raw))
        except (ValueError, TypeError) as exc:  # PolicyError is a ValueError, so is json's error
            policies[tenant_id] = exc if isinstance(exc, PolicyError) else PolicyError(f"invalid JSON: {exc}")
    return policies, True


class DbPolicyStore:
    def __init__(self, engine: Engine, ttl_s: float = DEFAULT_TTL_S, builtin: SafetyPolicy | None = None,
                 clock: Callable[[], float] = time.monotonic, dispose_engine: bool = False) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self.builtin = builtin or SafetyPolicy()
        self._clock = clock
        self._dispose_engine = dispose_engine
        self._snapshot: _Snapshot | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._first_load = asyncio.Lock()
        self._failed_at: float | None = None

    async def get(self, policy_id: str) -> SafetyPolicy:
        snapshot = await self._current()
        key = policy_id or DEFAULT_POLICY_ID
        found = snapshot.policies.get(key)
        if found is None and key != DEFAULT_POLICY_ID:
            key, found = DEFAULT_POLICY_ID, snapshot.policies.get(DEFAULT_POLICY_ID)
        if found is None:
            return self.builtin
        if isinstance(found, PolicyError):
            log.error("safety policy of %r is invalid (%s); its checks fail closed", key, found)
            raise PolicyUnavailable(f"the safety policy of {key!r} is invalid")
        return found

    async def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot is None:
            async with self._first_load:  # concurrent first requests share one read
                recent_failure = (self._failed_at is not None
                                  and self._clock() - self._failed_at < RETRY_AFTER_FAILURE_S)
                if self._snapshot is None and not recent_failure:
                    await self._load()
            snapshot = self._snapshot
            if snapshot is None:
                raise PolicyUnavailable("the safety policies cannot be read")
        elif self._clock() - snapshot.loaded_at >= self.ttl_s and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.create_task(self._load())
        return snapshot

    async def _load(self) -> None:
        try:
            policies, exists = await asyncio.to_thread(_read, self.engine)
        except Exception as exc:  # SQLAlchemyError mostly; a driver's OSError too. Never the request's problem.
            if self._snapshot is None:
                self._failed_at = self._clock()
                log.error("cannot read the safety policies: %s: %s", type(exc).__name__, exc)
                return
            log.warning("cannot refresh the safety policies (%s); keeping the copy from %.0f s ago",
                        type(exc).__name__, self._clock() - self._snapshot.loaded_at)
            self._snapshot = _Snapshot(self._snapshot.policies, self._clock(), self._snapshot.table_exists)
            return
        if self._snapshot is not None and exists and not self._snapshot.table_exists:
            log.info("safety_policies table found: %d tenant policies", len(policies))
        self._snapshot = _Snapshot(policies, self._clock(), exists)

    async def close(self) -> None:
        if self._refresh is not None and not self._refresh.done():
            await asyncio.gather(self._refresh, return_exceptions=True)
        if self._dispose_engine:
            self.engine.dispose()


def store_for_url(url: str, ttl_s: float = DEFAULT_TTL_S) -> DbPolicyStore:
    """A store on its own engine (disposed by `close`). PostgreSQL connections give up after 3 s, so a database
    that is down fails a check quickly instead of holding it until the caller's deadline."""
    from sqlalchemy.engine import make_url

    from services.common.db import create_db_engine, normalise_url

    is_pg = make_url(normalise_url(url)).get_backend_name() == "postgresql"
    engine = create_db_engine(url, **({"connect_args": {"connect_timeout": 3}} if is_pg else {}))
    return DbPolicyStore(engine, ttl_s=ttl_s, dispose_engine=True)


# --- administration (`sluice safety policy ...`) ---------------------------------------------------------------

def set_policy(engine: Engine, policy: SafetyPolicy, actor: str = "") -> None:
    """Stores `policy` for the tenant `policy.id` (`default` replaces the built-in defaults), replacing any
    previous one. The safety service picks it up within its TTL."""
    row = {"policy": json.dumps(policy_to_dict(policy), sort_keys=True), "updated_at": datetime.now(UTC),
           "updated_by": actor[:128]}
    for _ in range(2):  # update, else insert; a concurrent insert of the same tenant makes the second pass update
        try:
            with engine.begin() as connection:
                changed = connection.execute(update(safety_policies)
                                             .where(safety_policies.c.tenant_id == policy.id).values(**row)).rowcount
                if not changed:
                    connection.execute(insert(safety_policies).values(tenant_id=policy.id, **row))
            return
        except IntegrityError:
            continue
    raise RuntimeError(f"could not store the safety policy of {policy.id!r}")


def get_policy(engine: Engine, tenant: str) -> SafetyPolicy | None:
    """The tenant's own policy, or None when it has none. Raises PolicyError for a row that does not validate."""
    with engine.connect() as connection:
        raw = connection.execute(select(safety_policies.c.policy)
                                 .where(safety_policies.c.tenant_id == tenant)).scalar_one_or_none()
    return None if raw is None else policy_from_dict(tenant, json.loads(raw))


def effective_policy(engine: Engine, tenant: str) -> tuple[SafetyPolicy, str]:
    """What the safety service applies to `tenant`, and where it comes from."""
    own = get_policy(engine, tenant)
    if own is not None:
        return own, f"the policy of tenant {tenant!r}"
    if tenant != DEFAULT_POLICY_ID:
        default = get_policy(engine, DEFAULT_POLICY_ID)
        if default is not None:
            return default, f"the {DEFAULT_POLICY_ID!r} policy (tenant {tenant!r} has none of its own)"
    return SafetyPolicy(), "the built-in defaults"


def reset_policy(engine: Engine, tenant: str) -> bool:
    """Removes the tenant's own policy (it falls back to the default); True if there was one."""
    with engine.begin() as connection:
        return bool(connection.execute(delete(safety_policies).where(safety_policies.c.tenant_id == tenant)).rowcount)
