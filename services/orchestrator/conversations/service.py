"""The native gRPC Conversations API: stored history, budgeted into the model's context, replies streamed and saved.

A reply is saved when it completes. If the client goes away mid-stream (or a shutdown runs past its grace), the
handler is cancelled; its `finally` block then saves what was generated so far as an `incomplete` message. That write
is handed to the thread pool synchronously, before anything else is awaited, so no later cancellation can drop it:
a cancelled await abandons only the waiting, and the event loop's shutdown joins the pool's threads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
from google.protobuf import empty_pb2
from sluice.v1 import chat_pb2, conversations_pb2, conversations_pb2_grpc

from services.common.errors import ApiError, internal, invalid
from services.orchestrator.conversations.context import fit_context
from services.orchestrator.conversations.store import Conversation, ConversationStore, StoredMessage
from services.orchestrator.generate import Finished, Generator, PreparedGeneration, TextDelta
from services.orchestrator.lifecycle import RequestLifecycle
from services.orchestrator.native_chat import (
    FINISH_REASONS,
    abort,
    delta_response,
    finish_response,
    to_chat_request,
    validate,
)
from services.orchestrator.openai_facade import request_id_of
from services.orchestrator.pipeline.pipeline import ChatPipeline, tenant_of
from services.orchestrator.replicas import conversation_affinity
from services.orchestrator.size_bound import PromptSizeBound
from services.orchestrator.tenancy.metering import Metering, RequestMeter, begin_request
from services.orchestrator.tenancy.principal import current_principal

log = logging.getLogger(__name__)

_STATUS = {"complete": conversations_pb2.MESSAGE_STATUS_COMPLETE,
           "incomplete": conversations_pb2.MESSAGE_STATUS_INCOMPLETE,
           "refused": conversations_pb2.MESSAGE_STATUS_REFUSED}
_CONTEXT_ROLES = ("user", "assistant")  # what is replayed to the model; refused replies are not
MAX_CONTENT_CHARS = 1 << 20


def _message_pb(message: StoredMessage) -> conversations_pb2.ConversationMessage:
    pb = conversations_pb2.ConversationMessage(
        id=message.id, position=message.position, role=message.role, content=message.content,
        status=_STATUS[message.status], created=int(message.created_at.timestamp()),
        finish_reason=FINISH_REASONS.get(message.finish_reason or "", chat_pb2.FINISH_REASON_UNSPECIFIED))
    if message.prompt_tokens is not None:
        pb.prompt_tokens = message.prompt_tokens
    if message.completion_tokens is not None:
        pb.completion_tokens = message.completion_tokens
    return pb


def _conversation_pb(conversation: Conversation) -> conversations_pb2.Conversation:
    pb = conversations_pb2.Conversation(
        id=conversation.id, model=conversation.model, title=conversation.title, user=conversation.user_id or "",
        created=int(conversation.created_at.timestamp()), updated=int(conversation.updated_at.timestamp()),
        messages=[_message_pb(m) for m in conversation.messages])
    if conversation.system_prompt is not None:
        pb.system_prompt = conversation.system_prompt
    return pb


@dataclass(slots=True)
class _Reply:
    """What has been generated so far, so that any exit path can store it."""

    parts: list[str]
    completion_tokens: int = 0
    stored: bool = False


class ConversationsService(conversations_pb2_grpc.ConversationsServicer):
    def __init__(self, store: ConversationStore, generator: Generator,
                 tenant_of: Callable[[grpc.aio.ServicerContext], str] = tenant_of,
                 metering: Metering | None = None, lifecycle: RequestLifecycle | None = None) -> None:
        self.store = store
        self.generator = generator
        self.tenant_of = tenant_of  # the API key's tenant (auth interceptor)
        self.metering = metering
        # the same checks and stages as the other APIs: input guard, output guard, PII redacted before storage
        self.lifecycle = lifecycle or RequestLifecycle(ChatPipeline(), PromptSizeBound.for_catalog(generator.catalog))

    async def Create(self, request: conversations_pb2.CreateConversationRequest,
                     context: grpc.aio.ServicerContext) -> conversations_pb2.Conversation:
        try:
            self.generator.catalog.get(request.model)  # 404 for an unknown model, now rather than at the first Send
            conversation = await asyncio.to_thread(
                self.store.create, self.tenant_of(context), request.model, user_id=request.user or None,
                title=request.title,
                system_prompt=request.system_prompt if request.HasField("system_prompt") else None)
        except ApiError as error:
            await context.abort(error.grpc_code, error.message)
        return _conversation_pb(conversation)

    async def Get(self, request: conversations_pb2.GetConversationRequest,
                  context: grpc.aio.ServicerContext) -> conversations_pb2.Conversation:
        try:
            conversation = await asyncio.to_thread(self.store.get, self.tenant_of(context), request.id)
        except ApiError as error:
            await context.abort(error.grpc_code, error.message)
        return _conversation_pb(conversation)

    async def List(self, request: conversations_pb2.ListConversationsRequest,
                   context: grpc.aio.ServicerContext) -> conversations_pb2.ListConversationsResponse:
        try:
            page, next_token = await asyncio.to_thread(
                self.store.list, self.tenant_of(context), user_id=request.user or None,
                page_size=request.page_size or 20, page_token=request.page_token or None)
        except ApiError as error:
            await context.abort(error.grpc_code, error.message)
        return conversations_pb2.ListConversationsResponse(conversations=[_conversation_pb(c) for c in page],
                                                           next_page_token=next_token or "")

    async def Delete(self, request: conversations_pb2.DeleteConversationRequest,
                     context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        try:
            await asyncio.to_thread(self.store.delete, self.tenant_of(context), request.id)
        except ApiError as error:
            await context.abort(error.grpc_code, error.message)
        return empty_pb2.Empty()

    async def Send(self, request: conversations_pb2.SendMessageRequest,
                   context: grpc.aio.ServicerContext) -> AsyncIterator[chat_pb2.GenerateResponse]:
        meter = begin_request(self.metering, current_principal.get(), endpoint="conversations",
                              request_id=request_id_of(context))
        meter.activate()
        responses = self._send(request, context, meter)
        try:
            async for response in responses:
                yield response
        except (asyncio.CancelledError, GeneratorExit):
            meter.cancelled = True
            raise
        finally:
            await responses.aclose()  # its own clean-up (reply stored, generation stopped) comes first
            await meter.finish()

    async def _send(self, request: conversations_pb2.SendMessageRequest, context: grpc.aio.ServicerContext,
                    meter: RequestMeter) -> AsyncIterator[chat_pb2.GenerateResponse]:
        tenant = self.tenant_of(context)
        request_id = request_id_of(context)
        prepared: PreparedGeneration | None = None
        try:
            if not request.content:
                raise invalid("'content' must not be empty.", "content", "invalid_value")
            if len(request.content) > MAX_CONTENT_CHARS:
                raise invalid(f"'content' is longer than {MAX_CONTENT_CHARS} characters.", "content",
                              "invalid_value")
            self.lifecycle.size_bound.check_text(len(request.content), "content")  # before any tokenising
            conversation = await asyncio.to_thread(self.store.get, tenant, request.conversation_id)
            entry = self.generator.catalog.get(conversation.model)
            system = [{"role": "system", "content": conversation.system_prompt}] if conversation.system_prompt else []
            turns = [{"role": m.role, "content": m.content} for m in conversation.messages
                     if m.role in _CONTEXT_ROLES and m.status != "refused"]
            turns.append({"role": "user", "content": request.content})
            reserve = request.sampling.max_tokens if request.sampling.HasField("max_tokens") else \
                self.generator.default_max_tokens
            messages = await asyncio.to_thread(fit_context, entry.tokenizer, system, turns, entry.context_window,
                                               max(reserve, 1))
            chat = to_chat_request(chat_pb2.GenerateRequest(
                model=conversation.model, messages=[chat_pb2.Message(**m) for m in messages],
                sampling=request.sampling))
            validate(chat)
            meter.model = conversation.model
            conversation_affinity.set(conversation.id)  # its turns meet on the Triton replica holding its history
            admitted = await self.lifecycle.admit(chat, meter, self.generator, tenant=tenant, request_id=request_id)
            prepared, run = admitted.prepared, admitted.run
            content = admitted.chat.messages[-1].content  # as the input guard left it: PII is never stored
            await asyncio.to_thread(self.store.append_message, tenant, conversation.id, "user", content,
                                    prompt_tokens=len(entry.tokenizer.encode(content)))
        except ApiError as error:
            if prepared is not None:
                prepared.release()  # e.g. a quota rejection after routing: give back its in-flight place
            meter.fail(error.status)
            await abort(context, error, await meter.headers())
            return
        except BaseException:  # cancelled before the stream began
            if prepared is not None:
                prepared.release()
            raise
        log.info("conversation %s: request %s, %d of %d turns in a %d-token prompt", conversation.id, request_id,
                 len(messages) - len(system), len(turns), len(prepared.prompt_ids))
        response_id = f"gen-{uuid.uuid4().hex}"
        model = conversation.model
        await context.send_initial_metadata((("x-request-id", request_id), ("x-sluice-model", entry.name),
                                             *run.headers().items(), *meter.rate_limit_headers.items()))
        reply = _Reply(parts=[])
        events = self.lifecycle.pipeline.guard(self.generator.run(prepared, request_id), run, prepared)
        try:
            yield chat_pb2.GenerateResponse(id=response_id, model=model, start=chat_pb2.GenerateResponse.Start(
                role="assistant", created=int(time.time())))
            async for event in events:
                if isinstance(event, TextDelta):
                    reply.parts.append(event.text)
                    reply.completion_tokens += event.token_count
                    if event.text or event.token_count:
                        yield delta_response(response_id, model, event)
                elif isinstance(event, Finished):
                    # Stored before the finish event goes out: a client that saw the finish can read the message.
                    status = "refused" if event.reason == "content_filter" else "complete"
                    await self._save(tenant, conversation.id, reply, status, event.usage.prompt_tokens,
                                     event.usage.completion_tokens, event.reason)
                    yield finish_response(response_id, model, event)
        except ApiError as error:
            meter.fail(error.status)
            await self._save(tenant, conversation.id, reply, "incomplete", len(prepared.prompt_ids),
                             reply.completion_tokens, None)
            await context.abort(error.grpc_code, error.message)
        except (asyncio.CancelledError, GeneratorExit):
            log.info("conversation %s: request %s cancelled (client gone or shutdown) after %d tokens", conversation.id,
                     request_id, reply.completion_tokens)
            raise
        except Exception:
            log.exception("conversation %s: request %s failed", conversation.id, request_id)
            await self._save(tenant, conversation.id, reply, "incomplete", len(prepared.prompt_ids),
                             reply.completion_tokens, None)
            error = internal()
            meter.fail(error.status)
            await context.abort(error.grpc_code, error.message)
        finally:
            # Runs on every exit, cancellation included. The write is submitted first, so neither closing the Triton
            # stream nor a second cancellation (asyncio.run cancels every task at shutdown) can lose it.
            save = None if reply.stored else self._save(tenant, conversation.id, reply, "incomplete",
                                                        len(prepared.prompt_ids), reply.completion_tokens, None)
            try:
                await events.aclose()  # cancels the Triton request if it is still running
            finally:
                prepared.release()  # if the stream never started, nothing else gives back its in-flight place
                if save is not None:
                    await asyncio.shield(save)

    def _save(self, tenant: str, conversation_id: str, reply: _Reply, status: str, prompt_tokens: int,
              completion_tokens: int, finish_reason: str | None) -> asyncio.Future[None]:
        """Submits the assistant message's write to the thread pool now (not when a coroutine first runs)."""
        reply.stored = True  # a second exit path must not store the same reply twice
        write = functools.partial(self._write_reply, tenant, conversation_id, "".join(reply.parts), status,
                                  prompt_tokens, completion_tokens, finish_reason)
        return asyncio.get_running_loop().run_in_executor(None, write)

    def _write_reply(self, tenant: str, conversation_id: str, content: str, status: str, prompt_tokens: int,
                     completion_tokens: int, finish_reason: str | None) -> None:
        try:
            self.store.append_message(tenant, conversation_id, "assistant", content, status=status,
                                      prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                      finish_reason=finish_reason)
        except ApiError as error:  # e.g. the conversation was deleted while the reply streamed
            log.warning("conversation %s: reply not stored (%s)", conversation_id, error.code)
        except Exception:
            log.exception("conversation %s: reply not stored", conversation_id)
