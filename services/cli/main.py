"""The `sluice` command: build steps, the local stack and a chat client."""

from __future__ import annotations

import argparse
import sys


def _cmd_protos(args: argparse.Namespace) -> int:
    from services.cli.protos import generate

    print(f"generated stubs and {generate()}")
    return 0


def _cmd_repo_render(args: argparse.Namespace) -> int:
    from services.common.settings import Settings
    from services.supervisor.repository import render_repository

    settings = Settings.from_env()
    out = render_repository(settings, engine=args.engine, out_dir=args.out)
    print(f"rendered {args.engine} model repository at {out}")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    from services.supervisor.stack import up

    return up(detach=args.detach)


def _cmd_down(args: argparse.Namespace) -> int:
    from services.supervisor.stack import down

    return down()


def _cmd_status(args: argparse.Namespace) -> int:
    from services.supervisor.stack import status

    return status()


def _cmd_chat(args: argparse.Namespace) -> int:
    from services.cli.chat import chat

    return chat(args.message, model=args.model, max_tokens=args.max_tokens)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description="Sluice: gRPC-native LLM serving around Triton")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("protos", help="generate gRPC stubs and Envoy's descriptor set").set_defaults(func=_cmd_protos)

    repo = sub.add_parser("repo", help="Triton model repository")
    repo_sub = repo.add_subparsers(dest="repo_command", required=True)
    render = repo_sub.add_parser("render", help="render config.pbtxt templates into a model repository")
    render.add_argument("--engine", choices=["cpu", "trtllm"], default="cpu")
    render.add_argument("--out", default=None, help="output folder (default: <run dir>/model_repository)")
    render.set_defaults(func=_cmd_repo_render)

    up = sub.add_parser("up", help="start Triton, the orchestrator and Envoy")
    up.add_argument("--detach", action="store_true", help="start in the background and return when ready")
    up.set_defaults(func=_cmd_up)
    sub.add_parser("down", help="stop a detached stack (idempotent)").set_defaults(func=_cmd_down)
    sub.add_parser("status", help="show the stack's processes and health").set_defaults(func=_cmd_status)

    chat = sub.add_parser("chat", help="send one message through the OpenAI facade and stream the reply")
    chat.add_argument("message")
    chat.add_argument("--model", default=None)
    chat.add_argument("--max-tokens", type=int, default=128)
    chat.set_defaults(func=_cmd_chat)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
