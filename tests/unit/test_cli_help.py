"""The `sluice` command explains itself: a --version, help text on every command and option, and --json on every
command that lists or reports."""

from __future__ import annotations

import argparse

import pytest

from services.cli.main import build_parser

LISTING_COMMANDS = {"status", "tenants list", "keys list", "usage", "audit", "collections list", "trace"}


def _commands(parser: argparse.ArgumentParser, path: str = ""):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"`sluice {path} {name}` has no help text".replace("  ", " ")
                yield from _commands(sub, f"{path} {name}".strip())


def test_every_command_and_option_has_help_text() -> None:
    missing = [f"sluice {path} {'/'.join(action.option_strings) or action.dest}"
               for path, parser in _commands(build_parser()) for action in parser._actions
               if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction | argparse._VersionAction)
               and not action.help]
    assert missing == []


def test_listing_and_status_commands_take_json() -> None:
    commands = dict(_commands(build_parser()))
    for path in LISTING_COMMANDS:
        assert any("--json" in action.option_strings for action in commands[path]._actions), path


def test_version(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("sluice ")


def test_a_bad_day_is_refused(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["usage", "--since", "yesterday"])
    assert done.value.code == 2 and "expected a day as YYYY-MM-DD" in capsys.readouterr().err
