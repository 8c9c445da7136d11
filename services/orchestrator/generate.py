"""The generate stage: chat request → prompt tokens → Triton token stream → text deltas, finish reason, usage."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from engine.tokenizer import ChatTemplateError, ChatTokenizer, IncrementalDetokenizer
from services.common.errors import ApiError, invalid
from services.orchestrator.accounting import current_account, current_stream_tokens
from services.orchestrator.catalog import Deployment, ModelCatalog, ModelEntry
from services.orchestrator.chat_request import ChatRequest
from services.orchestrator.head_start import HeadStart
from services.orchestrator.logprobs import TokenLogprobs
from services.orchestrator.prefix_cache import cache_salt_id
from services.orchestrator.replicated_llm import ReplicatedLLM
from services.orchestrator.response_cache import CachedResponse, ResponseCache, cache_key
from services.orchestrator.routing import RouteDecision, Router
from services.orchestrator.stop_strings import StopStringMatcher
from services.orchestrator.structured_output import Guide
from services.orchestrator.tenancy.principal import current_principal
from services.orchestrator.triton_llm import LLMChunk, LLMParams, TokenTally, TritonLLM

log = logging.getLogger(__name__)

TOOL_MARKUP = ("<tool_call>", "</tool_call>")


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_openai(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens,
                "prompt_tokens_details": {"cached_tokens": self.cached_prompt_tokens}}


@dataclass(slots=True)
class TextDelta:
    text: str
    token_count: int


@dataclass(slots=True)
class Finished:
    reason: str  # "stop" | "length" | "tool_calls" | "content_filter"
    usage: Usage
    categories: list[str] = field(default_factory=list)  # content_filter: what the output guard found


@dataclass(frozen=True, slots=True)
class PromptCount:
    """What a request costs before it runs: charged against rate limits and quotas."""

    model: str  # the public model it would be routed to
    prompt_tokens: int
    max_tokens: int  # the completion budget reserved with the prompt


@dataclass(frozen=True, slots=True)
class _Tokenized:
    request: ChatRequest  # with the persona applied
    template_messages: list[dict]
    prompt_ids: list[int]
    max_tokens: int


def context_length_exceeded(window: int, prompt_tokens: int, completion_tokens: int) -> ApiError:
    return ApiError(400, f"This model's maximum context length is {window} tokens. However, you requested "
                         f"{prompt_tokens + completion_tokens} tokens ({prompt_tokens} in the messages, "
                         f"{completion_tokens} in the completion). Please reduce the length of the messages or "
                         "completion.", "invalid_request_error", "messages", "context_length_exceeded")


def raw_prompt_ids(request: ChatRequest, tokenizer: ChatTokenizer) -> list[int]:
    """A /v1/completions prompt: the client's token ids, unless a stage rewrote the text they spell (redaction),
    then that text encoded as is."""
    text = request.messages[0].content
    if request.prompt_ids is not None and tokenizer.decode(list(request.prompt_ids), False) == text:
        return list(request.prompt_ids)
    return tokenizer.encode(text)


@dataclass(frozen=True, slots=True)
class GenerationPlan:
    """What planning decided for a request: never changed once made. Admission (`admitted`) and a fallback
    (Generator._retarget) make a new plan instead, so no module patches one another's fields."""

    entry: ModelEntry
    prompt_ids: list[int]
    params: LLMParams
    stops: list[str]
    prefill: str = ""  # text appended after the generation prompt (a forced tool call's opening); not generated
    tool_markup: bool = False  # keep <tool_call> / </tool_call> in the text so the tool-call parser sees them
    template_messages: list[dict] | None = None  # kept to re-tokenise for a fallback deployment
    tools: list[dict] | None = None
    tenant: str = "default"
    priority: int = 0  # the engine's scheduling priority (metering sets it at admission); not a sampling parameter
    whole_words: bool = False  # the output guard releases whole words: the engine may stream a response per word
    cacheable: bool = True  # False when the input guard found content (e.g. PII) that must not be stored
    guide: Guide | None = None  # what the engine constrains the output to (response_format, a tool-call grammar)
    raw_prompt: bool = False  # /v1/completions: the first message is the prompt text, encoded without a template


@dataclass(slots=True)
class PreparedGeneration:
    """A request that passed validation and tokenisation: nothing after this point is the client's fault. Holds
    the frozen plan and the state of its run: the route (with its in-flight reservation), the cache lookup, and
    whether the output guard redacted the answer."""

    plan: GenerationPlan
    route: RouteDecision | None = None  # which deployment serves it, and why; updated if run() falls back
    cache_status: str | None = None  # "hit" | "miss" once run() has looked
    output_redacted: bool = False  # set by the output guard: the answer must not be cached either
    head_start: HeadStart | None = None  # the engine stream opened while the input guard ran (head_start.py)

    @property
    def entry(self) -> ModelEntry:
        return self.plan.entry

    @property
    def prompt_ids(self) -> list[int]:
        return self.plan.prompt_ids

    @property
    def params(self) -> LLMParams:
        return self.plan.params

    @property
    def stops(self) -> list[str]:
        return self.plan.stops

    @property
    def prefill(self) -> str:
        return self.plan.prefill

    @property
    def tool_markup(self) -> bool:
        return self.plan.tool_markup

    @property
    def tools(self) -> list[dict] | None:
        return self.plan.tools

    @property
    def tenant(self) -> str:
        return self.plan.tenant

    @property
    def guide(self) -> Guide | None:
        return self.plan.guide

    @property
    def priority(self) -> int:
        return self.plan.priority

    @property
    def cacheable(self) -> bool:
        return self.plan.cacheable and not self.output_redacted

    def admitted(self, *, tenant: str, priority: int, cacheable: bool, whole_words: bool = False) -> None:
        """What admission and the stages add to the plan (the tenant the stages ran for, the engine priority
        metering gave, whether the prompt may be stored, whether the output guard will release whole words): set
        once, before the generation runs."""
        self.plan = dataclasses.replace(self.plan, tenant=tenant, priority=priority,
                                        cacheable=self.plan.cacheable and cacheable, whole_words=whole_words)

    def release(self) -> None:
        """Gives back the request's place in its deployment's in-flight count, if it still holds one. Generator.run
        does this when it ends; a caller that prepared a request and then does not run it (an error, a quota
        rejection, a client gone before the stream started) calls it itself. Safe to call more than once.
        A head start nobody read is stopped too (its tokens are no longer counted: see discard_head_start)."""
        if self.head_start is not None:
            head, self.head_start = self.head_start, None
            head.abandon()
        if self.route is not None and self.route.reservation is not None:
            self.route.reservation.release()

    @property
    def tokenizer(self) -> ChatTokenizer:
        """The serving deployment's tokenizer (a canary or a fallback may not share the model's primary one)."""
        return self.route.deployment.tokenizer if self.route is not None else self.entry.tokenizer

    def headers(self) -> dict[str, str]:
        headers = self.route.headers() if self.route else {"x-sluice-model": self.entry.name}
        if self.cache_status:
            headers["x-sluice-cache"] = self.cache_status
        return headers


class Generator:
    def __init__(self, catalog: ModelCatalog, llm: TritonLLM | ReplicatedLLM, default_max_tokens: int = 256,
                 router: Router | None = None, cache: ResponseCache | None = None) -> None:
        self.catalog = catalog
        self.llm = llm
        self.default_max_tokens = default_max_tokens
        self.router = router or Router(catalog)
        self.cache = cache

    def prepare(self, request: ChatRequest, *, tools: list[dict] | None = None,
                prefill: str = "", request_id: str | None = None, tenant: str | None = None,
                tier: str | None = None, guide: Guide | None = None) -> PreparedGeneration:
        """`tools` (OpenAI tool objects) are rendered by the chat template; `prefill` starts the assistant turn."""
        principal = current_principal.get()  # admission control sheds the caller's tier first when overloaded
        if tier is None and principal is not None:
            tier = principal.tier.name  # `auto` sends large tiers to the large model
        route = self.router.route(request.model, request_id=request_id or uuid.uuid4().hex, tenant=tenant,
                                  tier=tier, prompt_chars=sum(len(m.content) for m in request.messages),
                                  max_tokens=request.max_tokens,
                                  admission_tier=principal.tier.name if principal is not None else None,
                                  may_use=principal.tier.allows if principal is not None else None,
                                  reserve=True)  # counted in flight from here: see PreparedGeneration.release
        try:
            return self._prepare_routed(request, route, tools=tools, prefill=prefill, tenant=tenant, guide=guide)
        except BaseException:
            if route.reservation is not None:
                route.reservation.release()
            raise

    def count(self, request: ChatRequest, *, tools: list[dict] | None = None, prefill: str = "",
              tenant: str | None = None) -> PromptCount:
        """The prompt's tokens and the completion budget on the model the request would be routed to, checked
        against its context window — with no admission check and no reservation, so that limits and quotas are
        charged before anything is admitted or any stage runs. Raises 400 (context, template) or 404 (model)."""
        principal = current_principal.get()
        entry = self.router.choose_model(request.model, tenant=tenant,
                                         tier=principal.tier.name if principal is not None else None,
                                         prompt_chars=sum(len(m.content) for m in request.messages),
                                         max_tokens=request.max_tokens)
        tokens = self._tokenize(request, entry, entry.primary, tools=tools, prefill=prefill, tenant=tenant)
        return PromptCount(entry.name, len(tokens.prompt_ids), tokens.max_tokens)

    def reprepare(self, prepared: PreparedGeneration, request: ChatRequest) -> PreparedGeneration:
        """The same admitted route (and in-flight reservation) for messages a stage rewrote (redaction, retrieved
        passages): re-tokenised and re-checked against the context window."""
        if prepared.route is None:
            raise ValueError("reprepare needs a routed generation")
        try:
            return self._prepare_routed(request, prepared.route, tools=prepared.tools, prefill=prepared.prefill,
                                        tenant=prepared.tenant, guide=prepared.guide)
        except BaseException:
            prepared.release()
            raise

    def start_early(self, prepared: PreparedGeneration, request_id: str) -> bool:
        """Opens the engine stream of an admitted plan now, before the stages finish (head_start.py). Not for a
        request the response cache would answer, nor one without a route. Returns whether it started."""
        route = prepared.route
        if prepared.head_start is not None or route is None:
            return False
        if (key := self._cache_key(prepared)) is not None and self.cache is not None and self.cache.get(key):
            return False
        self._reserve(route)
        tally = TokenTally()
        prepared.head_start = HeadStart(
            self.llm.stream(request_id, prepared.prompt_ids, prepared.params,
                            model_name=route.deployment.triton_model, tally=tally, priority=prepared.priority,
                            whole_words=prepared.plan.whole_words), tally)
        return True

    async def discard_head_start(self, prepared: PreparedGeneration) -> None:
        """Stops a head start that will not be read (the input guard blocked or rewrote the prompt) and bills the
        tokens the engine made for it to the request, so usage still equals the engine's output counter."""
        head, prepared.head_start = prepared.head_start, None
        if head is None:
            return
        await head.discard()
        if head.tally.received and (account := current_account.get()) is not None:
            deployment = prepared.route.deployment.name if prepared.route else prepared.entry.name
            account.add_round(prompt=0, completion=head.tally.received, cached=0, deployment=deployment)

    def _tokenize(self, request: ChatRequest, entry: ModelEntry, deployment: Deployment, *,
                  tools: list[dict] | None, prefill: str, tenant: str | None) -> _Tokenized:
        if request.raw_prompt:  # /v1/completions: the prompt as the client wrote it, no persona, no template
            template_messages = [m.as_template_dict() for m in request.messages]
            prompt_ids = raw_prompt_ids(request, deployment.tokenizer)
        else:
            request = self.catalog.personas.apply(request, model_system_prompt=entry.system_prompt, tenant=tenant)
            template_messages = [m.as_template_dict() for m in request.messages]
            try:
                prompt_ids = deployment.tokenizer.encode(deployment.tokenizer.render(
                    template_messages, tools=tools or None) + prefill)
            except ChatTemplateError as exc:
                raise invalid(f"The messages cannot be formatted for this model: {exc}", "messages") from exc
        room = deployment.context_window - len(prompt_ids)
        if room <= 0 or (request.max_tokens is not None and request.max_tokens > room):
            raise context_length_exceeded(deployment.context_window, len(prompt_ids), request.max_tokens or 1)
        max_tokens = request.max_tokens or min(self.default_max_tokens, room)
        return _Tokenized(request, template_messages, prompt_ids, max_tokens)

    def _prepare_routed(self, request: ChatRequest, route: RouteDecision, *, tools: list[dict] | None,
                        prefill: str, tenant: str | None, guide: Guide | None = None) -> PreparedGeneration:
        entry, deployment = route.entry, route.deployment
        tokens = self._tokenize(request, entry, deployment, tools=tools, prefill=prefill, tenant=tenant)
        request, template_messages, prompt_ids = tokens.request, tokens.template_messages, tokens.prompt_ids
        max_tokens = tokens.max_tokens
        if route.max_tokens_cap is not None:  # brownout: the deployment is missing its TTFT SLO
            max_tokens = min(max_tokens, route.max_tokens_cap)
        greedy = request.temperature == 0 or request.top_p == 0
        params = LLMParams(
            max_tokens=max_tokens, end_id=deployment.tokenizer.eos_token_id,
            temperature=0.0 if greedy else request.temperature, top_p=request.top_p if not greedy else 1.0,
            top_k=1 if greedy else request.top_k, seed=request.seed,
            presence_penalty=request.presence_penalty, frequency_penalty=request.frequency_penalty,
            repetition_penalty=request.repetition_penalty, min_tokens=request.min_tokens,
            cache_salt_id=cache_salt_id(tenant, deployment.prefix_cache),
            guide_type=guide.type if guide else None, guide=guide.text if guide else None,
            logprobs=request.logprobs, top_logprobs=request.top_logprobs)
        plan = GenerationPlan(entry, prompt_ids, params, request.stop, prefill, tool_markup=bool(tools),
                              template_messages=template_messages, tools=tools, tenant=tenant or "default",
                              guide=guide, raw_prompt=request.raw_prompt)
        return PreparedGeneration(plan, route=route)

    async def run(self, prepared: PreparedGeneration,
                  request_id: str) -> AsyncIterator[TextDelta | TokenLogprobs | Finished]:
        """Streams the answer: replayed from the response cache for a repeated deterministic request, else
        generated (and cached when it finishes). Ends the request's in-flight reservation however it ends."""
        try:
            key = self._cache_key(prepared)
            if key is not None:
                hit = self.cache.get(key)
                prepared.cache_status = "hit" if hit else "miss"
                if hit is not None:
                    await self.discard_head_start(prepared)
                    for text, count in hit.deltas:
                        yield TextDelta(text, count)
                    yield Finished(hit.finish_reason, Usage(hit.prompt_tokens, hit.completion_tokens))
                    return
            deltas: list[tuple[str, int]] = []
            events = self._generate(prepared, request_id)
            try:
                async for event in events:
                    if isinstance(event, TextDelta):
                        deltas.append((event.text, event.token_count))
                    elif isinstance(event, Finished) and key is not None and prepared.cacheable:
                        self.cache.put(key, CachedResponse(tuple(deltas), event.reason, event.usage.prompt_tokens,
                                                           event.usage.completion_tokens))
                    yield event
            finally:
                await events.aclose()  # now, not when the loop gets round to it: usage is counted in its clean-up
        finally:
            prepared.release()

    def _cache_key(self, prepared: PreparedGeneration) -> str | None:
        params = prepared.params
        deterministic = params.temperature == 0 or params.top_k == 1 or params.seed is not None
        if self.cache is None or not deterministic or params.logprobs:  # the cache keeps text, not log-probs
            return None
        deployment = prepared.route.deployment.name if prepared.route else prepared.entry.name
        return cache_key(tenant=prepared.tenant, deployment=deployment, prompt_ids=prepared.prompt_ids,
                         params=params, stops=prepared.stops, tools=prepared.tool_markup)

    async def _generate(self, prepared: PreparedGeneration,
                        request_id: str) -> AsyncIterator[TextDelta | TokenLogprobs | Finished]:
        usage = Usage(prompt_tokens=len(prepared.prompt_ids))  # re-read below: a fallback may re-tokenise
        detok: IncrementalDetokenizer | None = None  # made at the first token: from the deployment that serves it
        stops = StopStringMatcher(prepared.stops)
        tally = prepared.head_start.tally if prepared.head_start is not None else TokenTally()
        account = current_account.get()
        tokens = self._stream_with_fallback(prepared, request_id, tally)
        stopped = False
        try:
            async for chunk in tokens:
                if account is not None:
                    account.first_token()
                usage.prompt_tokens = len(prepared.prompt_ids)
                usage.completion_tokens += len(chunk.token_ids)
                usage.cached_prompt_tokens = chunk.cached_prompt_tokens
                if detok is None:
                    detok = prepared.tokenizer.detokenizer(keep_special=TOOL_MARKUP if prepared.tool_markup else ())
                text, stopped = stops.feed(detok.push(chunk.token_ids))
                yield TextDelta(text, len(chunk.token_ids))  # text may be empty while a character or stop is pending
                if chunk.logprobs is not None:
                    yield TokenLogprobs(chunk.token_ids, chunk.logprobs, chunk.top_logprobs)
                if stopped:
                    break
        finally:
            await tokens.aclose()  # stops the Triton request if it is still running and drains its last tokens
            usage.completion_tokens = tally.received  # what the engine produced, drained tokens included
            if (stream_tokens := current_stream_tokens.get()) is not None:
                stream_tokens.completion_tokens += tally.received
            if account is not None:
                deployment = prepared.route.deployment.name if prepared.route else prepared.entry.name
                account.add_round(prompt=len(prepared.prompt_ids), completion=tally.received,
                                  cached=tally.cached_prompt_tokens, deployment=deployment)
        if not stopped:
            tail, stopped = stops.feed(detok.flush() if detok is not None else "")
            tail += "" if stopped else stops.flush()
            if tail:
                yield TextDelta(tail, 0)
        length = not stopped and usage.completion_tokens >= prepared.params.max_tokens
        yield Finished("length" if length else "stop", usage)

    async def _stream_with_fallback(self, prepared: PreparedGeneration, request_id: str,
                                    tally: TokenTally) -> AsyncIterator[LLMChunk]:
        """Streams from the routed deployment, reporting its health to the router. If it fails before producing
        anything, the request moves to the model's fallback (re-tokenised for it) and `prepared.route` says so."""
        while True:
            route = prepared.route
            deployment = route.deployment if route else None
            if route is not None:
                self._reserve(route)  # routed without one (e.g. a test): count it now
            started, first_token_s, ok = time.monotonic(), None, False
            if (head := prepared.head_start) is not None:  # opened while the input guard ran: read it from there
                prepared.head_start = None
                started, tokens = head.started, head.chunks()
            else:
                tokens = self.llm.stream(request_id, prepared.prompt_ids, prepared.params,
                                         model_name=deployment.triton_model if deployment else None, tally=tally,
                                         priority=prepared.priority, whole_words=prepared.plan.whole_words)
            try:
                async for chunk in tokens:
                    if first_token_s is None:
                        first_token_s = time.monotonic() - started
                        if route is not None and route.reservation is not None:
                            route.reservation.start()  # no longer queued: admission control learns its TTFT
                    yield chunk
                ok = True
                return
            except ApiError as error:
                fallback = None
                if route is not None and first_token_s is None and error.status == 503:
                    fallback = self.router.fallback_after_failure(route, request_id)
                if fallback is None:
                    raise
                log.warning("request %s: %s failed before its first token; falling back to %s", request_id,
                            route.deployment.name, fallback.deployment.name)
                self._retarget(prepared, fallback)
            finally:
                await tokens.aclose()
                if route is not None and route.reservation is not None:
                    # a client that went away is not the deployment's fault
                    self.router.finished(route.reservation, ok=ok or first_token_s is not None,
                                         ttft_s=first_token_s)

    def _reserve(self, route: RouteDecision) -> None:
        """Holds a place in the route's in-flight count unless it holds one already."""
        if route.reservation is None or route.reservation.released:
            route.reservation = self.router.reserve(route.deployment)

    def _retarget(self, prepared: PreparedGeneration, route: RouteDecision) -> None:
        tokenizer, plan = route.deployment.tokenizer, prepared.plan
        if plan.raw_prompt:
            prompt_ids = tokenizer.encode((plan.template_messages or [{}])[0].get("content", ""))
        else:
            prompt_ids = tokenizer.encode(tokenizer.render(plan.template_messages or [], tools=plan.tools or None)
                                          + plan.prefill)
        prepared.route = route
        prepared.plan = dataclasses.replace(plan, entry=route.entry, prompt_ids=prompt_ids,
                                            params=dataclasses.replace(plan.params, end_id=tokenizer.eos_token_id))

