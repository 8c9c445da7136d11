"""A Sluice gRPC server refuses a port another server holds, instead of sharing it (gRPC's SO_REUSEPORT default)."""

import asyncio

import grpc
import pytest

from services.common.service_main import server_options, start_serving


async def _two_servers_on_one_port() -> None:
    first = grpc.aio.server(options=server_options(1 << 20))
    port = await start_serving(first, "127.0.0.1:0", (), "first server")
    second = grpc.aio.server(options=server_options(1 << 20))
    try:
        with pytest.raises(OSError, match="cannot bind the second server"):
            await start_serving(second, f"127.0.0.1:{port}", (), "second server")
    finally:
        await second.stop(None)
        await first.stop(None)


def test_a_second_server_on_a_taken_port_fails_to_start() -> None:
    asyncio.run(_two_servers_on_one_port())


def test_options_keep_the_message_size() -> None:
    assert ("grpc.max_receive_message_length", 16 * 1024 * 1024) in server_options(16 * 1024 * 1024)
    assert ("grpc.so_reuseport", 0) in server_options(16 * 1024 * 1024)
