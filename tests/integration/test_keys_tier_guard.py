"""`sluice keys create` never changes an existing tenant's tier: a different --tier is refused with a message that
names `sluice tenants set`, and the tenant stays where it was (SQLite, through the real CLI entry point)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli.main import main


def test_keys_create_refuses_to_change_a_tenants_tier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("SLUICE_RUN_DIR", str(tmp_path))
    monkeypatch.delenv("SLUICE_DATABASE_URL", raising=False)
    assert main(["keys", "create", "--tenant", "t1", "--tier", "free"]) == 0
    capsys.readouterr()

    assert main(["keys", "create", "--tenant", "t1", "--tier", "enterprise"]) == 2
    error = capsys.readouterr().err
    assert "free tier" in error and "sluice tenants set t1 --tier enterprise" in error

    assert main(["keys", "create", "--tenant", "t1"]) == 0  # no --tier: a key on the tenant's own tier
    assert main(["keys", "create", "--tenant", "t1", "--tier", "free"]) == 0  # the same tier is fine
    capsys.readouterr()
    assert main(["tenants", "list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("t1 "))
    assert row.split()[1] == "free"

    assert main(["tenants", "set", "t1", "--tier", "enterprise"]) == 0  # the named way works
    assert main(["keys", "create", "--tenant", "t1", "--tier", "enterprise"]) == 0
