"""The retrieve stage: search the requested collections for the latest user turn (through the retrieval service,
as the caller's tenant), screen the passages with the input guard, and place the best ones that fit a token budget
in the prompt as a system message with source ids. The response then cites them."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sluice.v1 import retrieval_pb2, retrieval_pb2_grpc

from services.common.errors import ApiError
from services.orchestrator.chat_request import ChatMessage, ChatRequest
from services.orchestrator.ingestion.gateway import collection_not_found
from services.orchestrator.pipeline.input_guard import InputGuard
from services.orchestrator.pipeline.stages import Stage, StageDown, run_stage

log = logging.getLogger(__name__)

TENANT_HEADER = "x-sluice-tenant"
DEFAULT_TOKEN_BUDGET = 384
INSTRUCTION = ("Answer the user's question using the passages below. Each passage starts with its source id in "
               "brackets; say which source you used. If the passages do not contain the answer, say so.")
SHORT_FOLLOW_UP_WORDS = 6  # a latest turn this short is searched together with the previous user turn
SNIPPET_CHARS = 240  # the passage text a citation carries


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1].rstrip() + "…"


@dataclass(frozen=True, slots=True)
class Passage:
    document_id: str
    chunk_id: str
    text: str
    score: float
    collection: str = ""
    metadata: tuple[tuple[str, str], ...] = ()

    def citation(self) -> dict:
        """What the answer cites: where the passage comes from (`source` is the document's path or file name as
        ingested, `title` its title when it had one) and the start of the text the model was given."""
        meta = dict(self.metadata)
        return {"document_id": self.document_id, "chunk_id": self.chunk_id, "collection": self.collection,
                "source": meta.get("source", self.document_id), "title": meta.get("title"),
                "snippet": snippet(self.text), "score": round(self.score, 6)}

    def line(self) -> str:
        return f"[{self.chunk_id}] {' '.join(self.text.split())}"


def search_query(messages: list[ChatMessage]) -> str:
    """The latest user turn, with the previous user turn as context when the latest is a short follow-up."""
    users = [m.content for m in messages if m.role == "user" and m.content.strip()]
    if not users:
        return ""
    latest = users[-1]
    if len(latest.split()) < SHORT_FOLLOW_UP_WORDS and len(users) > 1:
        return f"{users[-2]}\n{latest}"
    return latest


def context_message(passages: list[Passage]) -> ChatMessage:
    return ChatMessage(role="system", content=INSTRUCTION + "\n\n" + "\n".join(p.line() for p in passages))


def with_context(messages: list[ChatMessage], passages: list[Passage]) -> list[ChatMessage]:
    """The passages as a system message placed right after the leading system messages."""
    at = 0
    while at < len(messages) and messages[at].role in ("system", "developer"):
        at += 1
    return [*messages[:at], context_message(passages), *messages[at:]]


def fit_budget(passages: list[Passage], count_tokens: Callable[[str], int], budget: int) -> list[Passage]:
    """The best passages (by score) whose lines fit in `budget` tokens together with the instruction; a passage
    that does not fit is skipped (never cut), a smaller one after it may still fit."""
    used = count_tokens(INSTRUCTION)
    kept: list[Passage] = []
    for passage in sorted(passages, key=lambda p: -p.score):
        cost = count_tokens(passage.line() + "\n")
        if used + cost <= budget:
            kept.append(passage)
            used += cost
    return kept


@dataclass(slots=True)
class RetrievalResult:
    chat: ChatRequest
    citations: list[dict]


class RetrieveStage:
    def __init__(self, stage: Stage, stub: retrieval_pb2_grpc.RetrievalStub, screen: InputGuard | None = None,
                 count_tokens: Callable[[str, str], int] | None = None) -> None:
        self.stage = stage
        self.stub = stub
        self.screen = screen if stage.spec.options.get("screen_passages", True) else None
        self.token_budget = int(stage.spec.options.get("token_budget", DEFAULT_TOKEN_BUDGET))
        self.max_top_k = int(stage.spec.options.get("max_top_k", 20))
        self.count_tokens = count_tokens or (lambda model, text: max(1, len(text) // 4))

    async def _search(self, query: str, collections: tuple[str, ...], k: int,
                      tenant: str) -> list[tuple[str, retrieval_pb2.Hit]]:
        metadata = ((TENANT_HEADER, tenant),)
        replies = await asyncio.gather(*(
            self.stub.Search(retrieval_pb2.SearchRequest(query=query, collection=name, k=k), metadata=metadata,
                             timeout=self.stage.spec.timeout_s)
            for name in collections))
        return [(name, hit) for name, reply in zip(collections, replies, strict=True) for hit in reply.hits]

    async def run(self, chat: ChatRequest, *, tenant: str, request_id: str, degraded: list[str]) -> RetrievalResult:
        options = chat.retrieval
        query = search_query(chat.messages)
        if options is None or not query:
            return RetrievalResult(chat, [])
        k = min(options.top_k, self.max_top_k)
        try:
            hits = await run_stage(self.stage, lambda: self._search(query, options.collections, k, tenant),
                                   degraded)
        except ApiError as error:
            if error.status == 404:  # a collection the tenant does not have: say so rather than answer ungrounded
                raise collection_not_found(error.message, "retrieval.collections") from None
            raise
        if not hits:  # down (fail open) or nothing found: answer without passages
            return RetrievalResult(chat, [])
        best: dict[tuple[str, str], Passage] = {}
        for name, hit in hits:  # the same chunk id may exist in two collections: keep both
            if (name, hit.chunk_id) not in best or hit.score > best[(name, hit.chunk_id)].score:
                best[(name, hit.chunk_id)] = Passage(hit.document_id, hit.chunk_id, hit.text, hit.score, name,
                                                     tuple(sorted(hit.metadata.items())))
        passages = sorted(best.values(), key=lambda p: -p.score)[:k]
        if self.screen is not None:
            try:
                screened = await self.screen.screen([p.text for p in passages], tenant=tenant, request_id=request_id)
            except StageDown as down:  # unscreened passages never reach the model
                log.warning("request %s: passages could not be screened (%s); answering without them", request_id,
                            down.reason)
                if self.stage.name not in degraded:
                    degraded.append(self.stage.name)
                return RetrievalResult(chat, [])
            passages = [dataclasses.replace(p, text=text) for p, text in zip(passages, screened, strict=True)
                        if text is not None]
        passages = fit_budget(passages, lambda text: self.count_tokens(chat.model, text), self.token_budget)
        if not passages:
            return RetrievalResult(chat, [])
        grounded = dataclasses.replace(chat, messages=with_context(chat.messages, passages))
        return RetrievalResult(grounded, [p.citation() for p in passages])
