"""Admin commands on the tenancy database (Settings.db_url): `sluice tenants`, `sluice keys`, `sluice usage`,
`sluice audit`, `sluice users` and `sluice purge`. They migrate the database first, so they work before the first
`sluice up`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from services.common.settings import Settings


@contextmanager
def _engine() -> Iterator[tuple[Engine, Settings]]:
    from services.common.db import create_db_engine
    from services.orchestrator.migrations import migrate

    settings = Settings.from_env()
    migrate(settings.db_url)
    engine = create_db_engine(settings.db_url)
    try:
        yield engine, settings
    finally:
        engine.dispose()


def _store(engine: Engine, settings: Settings):
    from services.orchestrator.tenancy.store import TenantStore
    from services.orchestrator.tenancy.tiers import TierBook

    return TenantStore(engine, TierBook.load(settings.tiers_path))


def _fail(message: str) -> int:
    print(f"sluice: {message}", file=sys.stderr)
    return 2


def _day(value: str) -> str:
    """argparse type for --since: a calendar day, YYYY-MM-DD."""
    import datetime as dt

    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day as YYYY-MM-DD (e.g. 2026-12-01), got {value!r}") from None


def _known_tenant(engine: Engine, settings: Settings, tenant: str | None) -> None:
    """An unknown tenant is an error, not an empty table."""
    if tenant is not None and _store(engine, settings).get_tenant(tenant) is None:
        raise ValueError(f"no tenant {tenant!r} (`sluice tenants list` shows them)")


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, default=str, ensure_ascii=False))


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from services.orchestrator.tenancy.store import TenancyError

        try:
            return command(args)
        except (TenancyError, ValueError) as exc:
            return _fail(str(exc))

    return run


def _tenants_create(args: argparse.Namespace) -> int:
    with _engine() as (engine, settings):
        row = _store(engine, settings).create_tenant(args.name, args.tier)
        print(f"tenant {row.id} created on the {row.tier} tier")
    return 0


def _tenants_list(args: argparse.Namespace) -> int:
    with _engine() as (engine, settings):
        if args.json:
            _print_json([{"tenant": row.id, "tier": row.tier, "retention_days": row.retention_days,
                          "store_prompt_text": row.store_prompt_text, "created_at": row.created_at}
                         for row in _store(engine, settings).list_tenants()])
            return 0
        print(f"{'TENANT':<24} {'TIER':<12} {'RETENTION':<10} {'PROMPT TEXT IN AUDIT':<20} CREATED")
        for row in _store(engine, settings).list_tenants():
            retention = f"{row.retention_days}d" if row.retention_days else "forever"
            print(f"{row.id:<24} {row.tier:<12} {retention:<10} {'yes' if row.store_prompt_text else 'no':<20} "
                  f"{row.created_at:%Y-%m-%d %H:%M}")
    return 0


def _tenants_set(args: argparse.Namespace) -> int:
    with _engine() as (engine, settings):
        collections = args.default_collections.split(",") if args.default_collections is not None else None
        row = _store(engine, settings).update_tenant(
            args.name, tier=args.tier, retention_days=args.retention_days, clear_retention=args.keep_forever,
            store_prompt_text=args.store_prompt_text, default_collections=collections)
        print(f"tenant {row.id}: tier {row.tier}, retention "
              f"{str(row.retention_days) + ' days' if row.retention_days else 'forever'}, prompt text in audit "
              f"{'on' if row.store_prompt_text else 'off'}")
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    from services.orchestrator.tenancy.tiers import Limits

    with _engine() as (engine, settings):
        created = _store(engine, settings).create_key(
            args.tenant, tier=args.tier, name=args.name or "", user=args.user,
            limits=Limits(args.rpm, args.tpm, args.max_concurrent, args.tokens_per_day))
        if created.tenant_created:
            print(f"created tenant {args.tenant}", file=sys.stderr)
        print(f"created key {created.row.prefix} for tenant {args.tenant}. It is shown once; store it now:",
              file=sys.stderr)
        print(created.plaintext)
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    with _engine() as (engine, settings):
        _known_tenant(engine, settings, args.tenant)
        if args.json:
            _print_json([{"key": row.prefix, "tenant": row.tenant_id, "name": row.name, "created_at": row.created_at,
                          "revoked_at": row.revoked_at} for row in _store(engine, settings).list_keys(args.tenant)])
            return 0
        print(f"{'KEY':<20} {'TENANT':<20} {'NAME':<20} {'STATUS':<22} CREATED")
        for row in _store(engine, settings).list_keys(args.tenant):
            status = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
            print(f"{row.prefix:<20} {row.tenant_id:<20} {row.name[:20]:<20} {status:<22} "
                  f"{row.created_at:%Y-%m-%d %H:%M}")
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    with _engine() as (engine, settings):
        row = _store(engine, settings).revoke_key(args.key)
        print(f"revoked {row.prefix} (tenant {row.tenant_id}); replicas stop accepting it within their auth cache "
              f"({settings.auth_cache_s:g} s)")
    return 0


def _usage(args: argparse.Namespace) -> int:
    from services.orchestrator.tenancy.usage import UsageLog

    with _engine() as (engine, settings):
        _known_tenant(engine, settings, args.tenant)
        lines = UsageLog(engine).report(tenant_id=args.tenant, since_day=args.since)
        if args.json:
            print(json.dumps([dataclasses.asdict(line) for line in lines], indent=2))
            return 0
        print(f"{'TENANT':<20} {'DAY':<10} {'MODEL':<20} {'REQUESTS':>8} {'PROMPT':>10} {'COMPLETION':>10} "
              f"{'CACHED':>8} {'ERR':>5} {'CANC':>5} {'429':>5}")
        for line in lines:
            print(f"{line.tenant_id:<20} {line.day:<10} {line.model[:20]:<20} {line.requests:>8} "
                  f"{line.prompt_tokens:>10} {line.completion_tokens:>10} {line.cached_prompt_tokens:>8} "
                  f"{line.errors:>5} {line.cancelled:>5} {line.rejected:>5}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from services.orchestrator.tenancy.audit import AuditLog

    with _engine() as (engine, settings):
        _known_tenant(engine, settings, args.tenant)
        rows = list(reversed(AuditLog(engine).list(tenant_id=args.tenant, event=args.event, limit=args.limit)))
        if args.json:
            _print_json([{"at": row.at, "event": row.event, "tenant": row.tenant_id, "actor": row.actor,
                          "request_id": row.request_id, "details": json.loads(row.details or "{}")} for row in rows])
            return 0
        for row in rows:
            print(f"{row.at:%Y-%m-%d %H:%M:%S} {row.event:<16} tenant={row.tenant_id or '-'} actor={row.actor} "
                  f"request={row.request_id or '-'} {row.details}")
    return 0


def _users_export(args: argparse.Namespace) -> int:
    from services.orchestrator.tenancy.retention import export_user

    with _engine() as (engine, settings):
        _known_tenant(engine, settings, args.tenant)
        print(json.dumps(export_user(engine, args.tenant, args.user), indent=2, ensure_ascii=False))
    return 0


def _users_delete(args: argparse.Namespace) -> int:
    from services.orchestrator.tenancy.retention import delete_user

    with _engine() as (engine, settings):
        _known_tenant(engine, settings, args.tenant)
        counts = delete_user(engine, args.tenant, args.user)
        print(f"deleted {counts['conversations']} conversations ({counts['messages']} messages) and "
              f"{counts['usage_records']} usage records of user {args.user!r} in tenant {args.tenant}")
    return 0


def _purge(args: argparse.Namespace) -> int:
    from services.orchestrator.tenancy.retention import purge_expired

    with _engine() as (engine, _):
        for tenant, counts in purge_expired(engine).items():
            print(f"{tenant}: " + ", ".join(f"{n} {table}" for table, n in counts.items()))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    tiers = ["free", "plus", "enterprise"]
    tenants = sub.add_parser("tenants", help="tenants: create, list, set tier / retention / audit opt-in")
    tenants_sub = tenants.add_subparsers(dest="tenants_command", required=True)
    create = tenants_sub.add_parser("create", help="create a tenant")
    create.add_argument("name", help="the tenant's id (letters, digits, . _ : @ -)")
    create.add_argument("--tier", default=None, help="free, plus or enterprise (default: the tiers file's default)")
    create.set_defaults(func=_guarded(_tenants_create))
    tenants_list = tenants_sub.add_parser("list", help="every tenant with its tier and retention")
    tenants_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    tenants_list.set_defaults(func=_guarded(_tenants_list))
    update = tenants_sub.add_parser("set", help="change a tenant's tier, retention or audit opt-in")
    update.add_argument("name", help="the tenant's id")
    update.add_argument("--tier", default=None, help="free, plus or enterprise")
    update.add_argument("--retention-days", type=int, default=None,
                        help="delete the tenant's conversations and usage records older than this")
    update.add_argument("--keep-forever", action="store_true", help="clear the retention")
    update.add_argument("--store-prompt-text", action=argparse.BooleanOptionalAction, default=None,
                        help="keep prompt text (not only its hash) in the tenant's audit events")
    update.add_argument("--default-collections", default=None, help="comma-separated retrieval collections")
    update.set_defaults(func=_guarded(_tenants_set))

    keys = sub.add_parser("keys", help="API keys: create (shown once), list, revoke")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    key_create = keys_sub.add_parser("create", help="create a key (printed once)")
    key_create.add_argument("--tenant", required=True, help="created if it does not exist")
    key_create.add_argument("--tier", choices=tiers, default=None, help="the tier of a tenant created here")
    key_create.add_argument("--name", default=None, help="a label for the key (e.g. the app using it)")
    key_create.add_argument("--user", default=None, help="the user within the tenant the key belongs to")
    for limit in ("rpm", "tpm", "max-concurrent", "tokens-per-day"):
        key_create.add_argument(f"--{limit}", type=int, default=None, help="this key's own limit (default: tier's)")
    key_create.set_defaults(func=_guarded(_keys_create))
    key_list = keys_sub.add_parser("list", help="keys (prefixes only, never the secrets)")
    key_list.add_argument("--tenant", default=None, help="only this tenant's keys")
    key_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    key_list.set_defaults(func=_guarded(_keys_list))
    revoke = keys_sub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key", help="the key id, its prefix sk-sluice-XXXXXXXX, or the key")
    revoke.set_defaults(func=_guarded(_keys_revoke))

    usage = sub.add_parser("usage", help="tokens and requests per tenant, day and model")
    usage.add_argument("--tenant", default=None, help="only this tenant (it must exist)")
    usage.add_argument("--since", default=None, type=_day, help="first day, YYYY-MM-DD (UTC)")
    usage.add_argument("--json", action="store_true", help="print JSON instead of a table")
    usage.set_defaults(func=_guarded(_usage))

    audit = sub.add_parser("audit", help="the audit log, oldest first")
    audit.add_argument("--tenant", default=None, help="only this tenant's events (it must exist)")
    audit.add_argument("--event", default=None, help="e.g. key.created, auth.failed, limit.rejected")
    audit.add_argument("--limit", type=int, default=50, help="the newest N events (default 50)")
    audit.add_argument("--json", action="store_true", help="print JSON instead of lines")
    audit.set_defaults(func=_guarded(_audit))

    users = sub.add_parser("users", help="one end user's data: export (JSON) or delete")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    for name, func in (("export", _users_export), ("delete", _users_delete)):
        command = users_sub.add_parser(name, help=f"{name} everything stored about one user of a tenant")
        command.add_argument("--tenant", required=True, help="the user's tenant (it must exist)")
        command.add_argument("--user", required=True, help="the user id the client sent as `user`")
        command.set_defaults(func=_guarded(func))

    sub.add_parser("purge", help="delete data older than each tenant's retention").set_defaults(
        func=_guarded(_purge))
