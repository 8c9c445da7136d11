r"""`sluice safety policy set|show|reset --tenant T`: a tenant's safety policy in the database (Settings.db_url).

The commands migrate the database first (as the orchestrator does at start), so they work before the first
`sluice up`. The running safety service picks a change up within its cache TTL (5 s). The tenant `default` holds
the policy of every tenant without one of its own. A policy file is YAML (or JSON) with any of these fields:

    thresholds: {toxicity: 0.9, sexual_content: 0.7}   # per category, in [0, 1]
    actions: {sexual_content: flag, pii.email: off}     # block | redact | flag | off
    allow_list: ['support@acme\.com']                  # regexes: PII values kept, text not classified
    deny_list: ['\bproject zephyr\b']                  # regexes: a match triggers `deny_list`
    fail_mode: closed                                   # closed | flag (rules-only when the classifier is down)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from services.safety.policy import PolicyError, effective_settings, policy_from_dict, policy_to_dict


def _engine():
    from services.common.db import create_db_engine
    from services.common.settings import Settings
    from services.orchestrator.migrations import migrate

    url = Settings.from_env().db_url
    migrate(url)
    return create_db_engine(url)


def read_policy_file(path: str) -> object:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from None


def _cmd_set(args: argparse.Namespace) -> int:
    from services.safety.policy_db import set_policy

    try:
        policy = policy_from_dict(args.tenant, read_policy_file(args.file))
    except (PolicyError, OSError) as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    engine = _engine()
    try:
        set_policy(engine, policy, actor=args.actor)
    finally:
        engine.dispose()
    print(f"safety policy of {args.tenant!r} stored: {json.dumps(policy_to_dict(policy), sort_keys=True)}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from services.safety.policy_db import effective_policy

    engine = _engine()
    try:
        policy, source = effective_policy(engine, args.tenant)
    except PolicyError as exc:
        print(f"sluice: the stored policy is invalid: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"# {args.tenant}: {source}")
    print(yaml.safe_dump(policy_to_dict(policy) if args.own else effective_settings(policy), sort_keys=False),
          end="")
    return 0


def _cmd_reset(args: argparse.Namespace) -> int:
    from services.safety.policy_db import reset_policy

    engine = _engine()
    try:
        removed = reset_policy(engine, args.tenant)
    finally:
        engine.dispose()
    print(f"safety policy of {args.tenant!r} {'removed' if removed else 'was not set'}; it uses the default now")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Adds `sluice safety ...` to the CLI's subcommands."""
    safety = sub.add_parser("safety", help="safety policies per tenant")
    safety_sub = safety.add_subparsers(dest="safety_command", required=True)
    policy = safety_sub.add_parser("policy", help="a tenant's thresholds, actions, allow/deny lists and fail mode",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    put = policy_sub.add_parser("set", help="store a tenant's policy from a YAML file (replaces the previous one)")
    put.add_argument("--tenant", required=True, help="tenant id; `default` for tenants without a policy")
    put.add_argument("--file", default="-", help="YAML or JSON policy file; `-` (the default) reads stdin")
    put.add_argument("--actor", default="cli", help="recorded as the policy's `updated_by`")
    put.set_defaults(func=_cmd_set)
    show = policy_sub.add_parser("show", help="the policy the safety service applies to a tenant")
    show.add_argument("--tenant", required=True, help="tenant id; `default` for the default policy")
    show.add_argument("--own", action="store_true", help="only the settings that differ from the defaults")
    show.set_defaults(func=_cmd_show)
    reset = policy_sub.add_parser("reset", help="remove a tenant's own policy (back to the default)")
    reset.add_argument("--tenant", required=True, help="tenant id; `default` for the default policy")
    reset.set_defaults(func=_cmd_reset)

