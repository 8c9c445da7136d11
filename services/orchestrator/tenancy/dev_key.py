"""The local dev tenant's key for `make run` / `sluice up`: created once, kept (mode 600) in the run directory so
every start prints the same key and `sluice chat` can use it. Only the hash is in the database."""

from __future__ import annotations

import os
from pathlib import Path

from services.common.db import create_db_engine
from services.common.settings import Settings
from services.orchestrator.migrations import migrate
from services.orchestrator.tenancy.store import TenantStore
from services.orchestrator.tenancy.tiers import TierBook

DEV_TENANT = "dev"
KEY_FILE = "dev-api-key"


def key_file(settings: Settings) -> Path:
    return settings.run_dir / KEY_FILE


def ensure_dev_key(settings: Settings) -> str:
    """The dev tenant's key, created (enterprise tier) if the run directory has none that still authenticates."""
    migrate(settings.db_url)
    engine = create_db_engine(settings.db_url)
    try:
        store = TenantStore(engine, TierBook.load(settings.tiers_path))
        path = key_file(settings)
        if path.exists():
            key = path.read_text().strip()
            if store.authenticate(key) is not None:
                return key
        key = store.create_key(DEV_TENANT, tier="enterprise", name="dev (sluice up)", actor="sluice up").plaintext
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        return key
    finally:
        engine.dispose()


def local_api_key(settings: Settings) -> str | None:
    """SLUICE_API_KEY, else the dev key of the local stack, else None."""
    if os.environ.get("SLUICE_API_KEY"):
        return os.environ["SLUICE_API_KEY"]
    try:
        return key_file(settings).read_text().strip() or None
    except OSError:
        return None
