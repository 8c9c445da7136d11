"""Tenants, users and API keys in the database. Creating or revoking a key writes its audit event in the same
transaction, so the log cannot miss one."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from services.common.db import create_db_engine, session_factory
from services.orchestrator.tenancy import audit
from services.orchestrator.tenancy.keys import generate_key, key_id_of, matches
from services.orchestrator.tenancy.models import ApiKeyRow, TenantRow, UserRow
from services.orchestrator.tenancy.principal import Principal
from services.orchestrator.tenancy.tiers import Limits, TierBook

NO_OVERRIDES = Limits()
TENANT_NAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


class TenancyError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class CreatedKey:
    row: ApiKeyRow
    plaintext: str
    tenant_created: bool


def _now() -> datetime:
    return datetime.now(UTC)


class TenantStore:
    def __init__(self, engine: Engine, tiers: TierBook | None = None) -> None:
        self._sessions = session_factory(engine)
        self.tiers = tiers or TierBook.load()

    # -- tenants ---------------------------------------------------------------------------------------------------
    def _ensure_tenant(self, session: Session, name: str, tier: str | None, actor: str) -> tuple[TenantRow, bool]:
        if not TENANT_NAME.match(name):
            raise TenancyError(f"invalid tenant name {name!r}: use 1-128 letters, digits and _.:@-")
        row = session.get(TenantRow, name)
        if row is not None:
            return row, False
        tier = tier or self.tiers.default
        self.tiers.get(tier)
        row = TenantRow(id=name, tier=tier, created_at=_now(), store_prompt_text=False)
        session.add(row)
        session.flush()  # the tenant row first: keys and users refer to it (the ORM has no relationship to order by)
        session.add(audit.AuditEvent(audit.TENANT_CREATED, actor, name, details={"tier": tier}).row())
        return row, True

    def create_tenant(self, name: str, tier: str | None = None, actor: str = "cli") -> TenantRow:
        with self._sessions.begin() as session:
            row, created = self._ensure_tenant(session, name, tier, actor)
            if not created:
                raise TenancyError(f"tenant {name!r} already exists")
            return row

    def update_tenant(self, name: str, *, tier: str | None = None, retention_days: int | None = None,
                      clear_retention: bool = False, store_prompt_text: bool | None = None,
                      default_collections: list[str] | None = None, actor: str = "cli") -> TenantRow:
        with self._sessions.begin() as session:
            row = session.get(TenantRow, name)
            if row is None:
                raise TenancyError(f"no tenant {name!r}")
            changes: dict[str, object] = {}
            if tier is not None:
                self.tiers.get(tier)
                row.tier = changes["tier"] = tier
            if retention_days is not None:
                if retention_days <= 0:
                    raise TenancyError("retention_days must be positive")
                row.retention_days = changes["retention_days"] = retention_days
            if clear_retention:
                row.retention_days = changes["retention_days"] = None
            if store_prompt_text is not None:
                row.store_prompt_text = changes["store_prompt_text"] = store_prompt_text
            if default_collections is not None:
                row.default_collections = json.dumps(default_collections)
                changes["default_collections"] = default_collections
            session.add(audit.AuditEvent(audit.TENANT_UPDATED, actor, name, details=changes).row())
            return row

    def get_tenant(self, name: str) -> TenantRow | None:
        with self._sessions() as session:
            return session.get(TenantRow, name)

    def list_tenants(self) -> list[TenantRow]:
        with self._sessions() as session:
            return list(session.scalars(select(TenantRow).order_by(TenantRow.id)))

    @staticmethod
    def _user_id(session: Session, tenant: str, name: str) -> str:
        """The id of the tenant's user `name`, created on first use (the tenant row must exist)."""
        row = session.scalar(select(UserRow).where(UserRow.tenant_id == tenant, UserRow.name == name))
        if row is None:
            row = UserRow(id=str(uuid.uuid4()), tenant_id=tenant, name=name, created_at=_now())
            session.add(row)
            session.flush()
        return row.id

    # -- keys ------------------------------------------------------------------------------------------------------
    def create_key(self, tenant: str, *, tier: str | None = None, name: str = "", user: str | None = None,
                   limits: Limits = NO_OVERRIDES, actor: str = "cli") -> CreatedKey:
        """Creates the tenant if needed (on `tier`, else the default tier) and a key for it. A key never changes
        an existing tenant's tier: a different `tier` raises TenancyError naming `sluice tenants set`."""
        for field, value in (("rpm", limits.rpm), ("tpm", limits.tpm), ("max_concurrent", limits.max_concurrent),
                             ("tokens_per_day", limits.tokens_per_day)):
            if value is not None and value <= 0:
                raise TenancyError(f"{field} must be positive")
        with self._sessions.begin() as session:
            row, created = self._ensure_tenant(session, tenant, tier, actor)
            if tier is not None and row.tier != tier:  # every key of the tenant would silently change tier
                raise TenancyError(f"tenant {tenant!r} is on the {row.tier} tier, not {tier}; a new key does not "
                                   f"change it. To move the whole tenant, run: sluice tenants set {tenant} "
                                   f"--tier {tier}")
            user_id = self._user_id(session, tenant, user) if user else None
            new = generate_key()
            key = ApiKeyRow(id=new.id, tenant_id=tenant, user_id=user_id, name=name, prefix=new.prefix,
                            salt=new.salt, secret_hash=new.secret_hash, rpm=limits.rpm, tpm=limits.tpm,
                            max_concurrent=limits.max_concurrent, tokens_per_day=limits.tokens_per_day,
                            created_at=_now())
            session.add(key)
            session.add(audit.AuditEvent(audit.KEY_CREATED, actor, tenant,
                                         details={"key_id": new.id, "name": name}).row())
            return CreatedKey(key, new.plaintext, created)

    def list_keys(self, tenant: str | None = None) -> list[ApiKeyRow]:
        with self._sessions() as session:
            query = select(ApiKeyRow).order_by(ApiKeyRow.tenant_id, ApiKeyRow.created_at)
            if tenant is not None:
                query = query.where(ApiKeyRow.tenant_id == tenant)
            return list(session.scalars(query))

    def revoke_key(self, key: str, actor: str = "cli") -> ApiKeyRow:
        """`key` is the key id, its prefix (`sk-sluice-<id>`) or the whole key."""
        key_id = key_id_of(key) or key.removeprefix("sk-sluice-")
        with self._sessions.begin() as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None:
                raise TenancyError(f"no key {key!r}")
            if row.revoked_at is None:
                row.revoked_at = _now()
                session.add(audit.AuditEvent(audit.KEY_REVOKED, actor, row.tenant_id,
                                             details={"key_id": key_id}).row())
            return row

    def authenticate(self, plaintext: str) -> Principal | None:
        """The key's principal, or None for a malformed, unknown or revoked key or a disabled tenant."""
        key_id = key_id_of(plaintext)
        if key_id is None:
            return None
        with self._sessions() as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None or row.revoked_at is not None or not matches(plaintext, row.salt, row.secret_hash):
                return None
            tenant = session.get(TenantRow, row.tenant_id)
            if tenant is None or tenant.disabled_at is not None:
                return None
            tier = self.tiers.get(tenant.tier)
            own = Limits(row.rpm, row.tpm, row.max_concurrent, row.tokens_per_day)
            return Principal(tenant_id=tenant.id, key_id=row.id, tier=tier, key_limits=tier.limits.override(own),
                             user_id=row.user_id, store_prompt_text=tenant.store_prompt_text,
                             default_collections=tuple(json.loads(tenant.default_collections or "[]")))


def issue_key(db_url: str, tenant: str, *, tier: str | None = None, name: str = "") -> str:
    """A new key's plain text, through a short-lived engine (benchmarks and tests that need one key)."""
    engine = create_db_engine(db_url)
    try:
        return TenantStore(engine).create_key(tenant, tier=tier, name=name).plaintext
    finally:
        engine.dispose()
