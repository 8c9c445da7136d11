"""The Conversations service in a real orchestrator (against the stack's Triton) on both databases: replies are
stored complete, and a reply cut off by a client hang-up or by a shutdown past its grace is stored incomplete."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from sluice.v1 import chat_pb2, conversations_pb2, conversations_pb2_grpc

from services.common.db import create_db_engine
from services.common.settings import Settings
from services.orchestrator.conversations.store import Conversation, ConversationStore
from services.orchestrator.server import create_server
from services.orchestrator.tenancy.store import issue_key
from tests.integration.postgres import pg_url  # noqa: F401  (fixture)


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, stack: Settings, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        return stack.replace(database_url=f"sqlite:///{tmp_path / 'conversations.db'}")
    return stack.replace(database_url=request.getfixturevalue("pg_url"))


TENANT = "test"


def _sampling(tokens: int) -> chat_pb2.SamplingParams:
    return chat_pb2.SamplingParams(max_tokens=tokens, min_tokens=tokens, temperature=0.0)


def _stored(settings: Settings, conversation_id: str) -> Conversation:
    engine = create_db_engine(settings.db_url)
    try:
        return ConversationStore(engine).get(TENANT, conversation_id)
    finally:
        engine.dispose()


def _create_key(settings: Settings) -> str:
    """A key of TENANT in this test's database (create_server has migrated it)."""
    return issue_key(settings.db_url, TENANT, tier="enterprise")


def test_replies_are_stored_complete_or_incomplete(settings: Settings) -> None:
    async def scenario() -> tuple[str, str, str]:
        server, port, llm = await create_server(settings, address="127.0.0.1:0")
        auth = (("authorization", f"Bearer {await asyncio.to_thread(_create_key, settings)}"),)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub = conversations_pb2_grpc.ConversationsStub(channel)
        try:
            complete = await stub.Create(conversations_pb2.CreateConversationRequest(model=settings.model_name),
                                         metadata=auth)
            events = [e async for e in stub.Send(conversations_pb2.SendMessageRequest(
                conversation_id=complete.id, content="Hello!", sampling=_sampling(12)), metadata=auth)]
            assert events[-1].finish.usage.completion_tokens == 12

            hung_up = await stub.Create(conversations_pb2.CreateConversationRequest(model=settings.model_name),
                                        metadata=auth)
            call = stub.Send(conversations_pb2.SendMessageRequest(conversation_id=hung_up.id, content="Hello!",
                                                                  sampling=_sampling(300)), metadata=auth)
            for _ in range(4):
                await call.read()
            call.cancel()
            for _ in range(100):  # the handler stores the partial reply after its cancellation
                if len(_stored(settings, hung_up.id).messages) == 2:
                    break
                await asyncio.sleep(0.05)

            shut_down = await stub.Create(conversations_pb2.CreateConversationRequest(model=settings.model_name),
                                          metadata=auth)
            call = stub.Send(conversations_pb2.SendMessageRequest(conversation_id=shut_down.id, content="Hello!",
                                                                  sampling=_sampling(300)), metadata=auth)
            for _ in range(4):
                await call.read()
            await server.stop(grace=0.2)  # past its grace the stream is cancelled; the write still happens
            return complete.id, hung_up.id, shut_down.id
        finally:
            await server.stop(None)
            await llm.close()
            await channel.close()

    complete_id, hung_up_id, shut_down_id = asyncio.run(scenario())
    complete = _stored(settings, complete_id).messages
    assert [(m.role, m.status, m.completion_tokens, m.finish_reason) for m in complete] == [
        ("user", "complete", None, None), ("assistant", "complete", 12, "length")]
    for conversation_id in (hung_up_id, shut_down_id):
        user, reply = _stored(settings, conversation_id).messages
        assert (user.role, reply.role, reply.status, reply.finish_reason) == ("user", "assistant", "incomplete", None)
        assert 3 <= reply.completion_tokens < 300 and reply.content
        assert reply.prompt_tokens == complete[1].prompt_tokens
