"""What every CLI command that calls the running stack shares: where the API is, which key to use, and errors in
words instead of gRPC status codes."""

from __future__ import annotations

import os

import grpc

from services.common.settings import Settings
from services.orchestrator.tenancy.dev_key import key_file

API_KEY_HELP = "API key (default: $SLUICE_API_KEY, else the local stack's dev key)"


def api_target(settings: Settings) -> str:
    return f"{settings.host}:{settings.http_port}"


def resolve_api_key(settings: Settings, given: str | None = None) -> tuple[str | None, str]:
    """The key to send and where it came from: --api-key, then SLUICE_API_KEY, then the dev key file."""
    if given:
        return given, "--api-key"
    if os.environ.get("SLUICE_API_KEY"):
        return os.environ["SLUICE_API_KEY"], "SLUICE_API_KEY"
    try:
        key = key_file(settings).read_text().strip()
    except OSError:
        key = ""
    return (key, f"the dev key in {key_file(settings)}") if key else (None, "no key")


def auth_metadata(key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),) if key else ()


def describe_rpc_error(exc: grpc.RpcError, settings: Settings) -> str:
    """One sentence a person can act on, for a failed call to the stack."""
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    details = (exc.details() if callable(getattr(exc, "details", None)) else "") or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return (f"the Sluice API at {api_target(settings)} is not answering ({details or 'unavailable'}); "
                "is the stack running? Start it with `sluice up` (or check `sluice status`).")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return (f"the API key was refused ({details}). Pass --api-key, set SLUICE_API_KEY, or run `sluice up` to "
                "create the local dev key.")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return f"not allowed: {details}"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return f"rate limited or over quota: {details}. Wait a little and retry."
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "the call took too long and was given up. Retry; if it keeps happening, check `sluice status`."
    if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.OUT_OF_RANGE):
        return details or "the request was refused"
    return f"the call failed: {details or 'unknown error'}"


def is_transient(exc: grpc.RpcError) -> bool:
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    return code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL)
