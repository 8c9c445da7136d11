"""The output guard stage: generated text is moderated as it streams, and released token by token.

Two halves, so that a token costs no round trip to another process:
- Rules, here, per text delta (services/safety/release_gate.py): the tenant's PII redaction and deny list, with the
  bounded look-back that holds back only what could still become a PII value. The policy comes from the safety
  service, in answer to the opening message of the CheckOutput stream (sent while the prompt is prefilled).
- The classifier, in the safety service, per window: released text is sent on the same stream every
  `window_chars` characters (default 64), without waiting, and the verdicts are read as they come. Each window is
  classified with the text before it, so a phrase across two windows is seen whole; a window costs the safety
  service and the classifier the same whatever its length (~1 ms of CPU together), so windows are no smaller than
  the bound below needs: a window of 64 leaves 16 of the 80 characters for its verdict to arrive.

The bound on a blocked answer: at most `release_ahead_chars` characters (stage option, default 80) are released
before the classifier's verdict on them has arrived; when the stream gets that far ahead, release waits for the
verdict. A STOP verdict ends the answer with finish_reason "content_filter" (what was sent stays sent). With
`release_ahead_chars: 0` nothing is released before it has been classified (smaller windows, lumpier streams). At
the end of the answer, every window's verdict is awaited before the held-back tail and the finish go out.
Under load, windows are larger (stage option `load_tiers`, e.g. "8:2,32:4": an answer that starts while more than 8
answers are being moderated uses windows and a release-ahead bound twice the configured ones; above 32, four times):
each window costs the safety service and the classifier a fixed amount, whatever its length. An answer keeps the
sizes it started with, so its bound is known when it starts.
Non-text events (tool calls) pass through unchanged. Token log-probs (TokenLogprobs) spell the text they belong to,
so they are held until that text is released, and withheld for good once the guard has redacted anything.

Fail closed: a failure before any text was released raises a 503 ApiError (the facade answers with an HTTP error);
after that, the same error becomes an SSE error frame. Fail open: the rest of the answer passes with the rules
alone (unmoderated if the policy never arrived) and the stage is reported degraded."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from functools import lru_cache
from typing import Any

import grpc
from sluice.v1 import safety_pb2, safety_pb2_grpc

from engine.streaming import StreamInterval
from services.common.metrics import record_safety
from services.common.telemetry import outgoing_metadata
from services.orchestrator.accounting import StreamTokens, current_stream_tokens
from services.orchestrator.generate import Finished, TextDelta, Usage
from services.orchestrator.logprobs import TokenLogprobs
from services.orchestrator.pipeline.input_guard import policy_id_for
from services.orchestrator.pipeline.stages import Stage, StageDown
from services.safety.policy import PolicyError, SafetyPolicy, policy_from_dict
from services.safety.release_gate import ReleaseGate

log = logging.getLogger(__name__)

CONTENT_FILTER = "content_filter"
DEFAULT_RELEASE_AHEAD_CHARS = 80
DEFAULT_WINDOW_CHARS = 64


def from_held(held: list[TokenLogprobs]) -> TokenLogprobs:
    """The held log-probs as one event (and the list emptied)."""
    merged = TokenLogprobs([], [], [] if any(e.top is not None for e in held) else None)
    for event in held:
        merged.token_ids.extend(event.token_ids)
        merged.logprobs.extend(event.logprobs)
        if merged.top is not None:
            merged.top.extend(event.top or [[] for _ in event.token_ids])
    held.clear()
    return merged


@lru_cache(maxsize=256)
def _policy(policy_id: str, policy_json: str) -> SafetyPolicy:
    """Policies compile regexes: one copy per distinct policy, not one per answer."""
    return policy_from_dict(policy_id, json.loads(policy_json) if policy_json else {})


class _Windows:
    """One CheckOutput stream in windowed mode: the policy first, then windows written without waiting for their
    verdicts, which a reader task collects in order."""

    def __init__(self, stub: safety_pb2_grpc.SafetyStub, stage: Stage, policy_id: str, request_id: str) -> None:
        self.stage = stage
        self.policy_id = policy_id
        self.call = stub.CheckOutput(metadata=outgoing_metadata())  # traceparent: the output_guard span
        self.opening = asyncio.ensure_future(self.stage.call(lambda: self._open(request_id)))
        self.reader: asyncio.Task | None = None
        self.sent = 0        # characters sent for classification
        self.answered = 0    # characters whose verdict has arrived
        self._sizes: list[int] = []  # sizes of the windows awaiting a verdict, in order
        self.stop: safety_pb2.OutputDecision | None = None
        self.failure: BaseException | None = None
        self._changed = asyncio.Event()

    async def _open(self, request_id: str) -> SafetyPolicy:
        await self.call.write(safety_pb2.OutputChunk(policy_id=self.policy_id, request_id=request_id, windowed=True))
        decision = await self.call.read()
        if decision is grpc.aio.EOF:
            raise StageDown(self.stage.name, "the safety service ended the stream early")
        try:
            return _policy(self.policy_id, decision.policy_json)
        except (PolicyError, ValueError) as exc:
            raise StageDown(self.stage.name, f"unusable policy from the safety service: {exc}") from None

    async def policy(self) -> SafetyPolicy:
        policy = await self.opening
        if self.reader is None:
            self.reader = asyncio.ensure_future(self._read_verdicts())
        return policy

    async def _read_verdicts(self) -> None:
        try:
            while True:
                decision = await self.call.read()
                if decision is grpc.aio.EOF:
                    if self._sizes:
                        raise StageDown(self.stage.name, "the safety service ended the stream early")
                    return
                if decision.final and not self._sizes:  # the answer to the half-close
                    return
                self.answered += self._sizes.pop(0) if self._sizes else 0
                if decision.action == safety_pb2.ACTION_STOP:
                    self.stop = decision
                    return
                self._changed.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # kept for whoever looks next (check / answered_up_to)
            self.failure = exc
        finally:
            self._changed.set()

    async def send(self, text: str) -> None:
        if self.stop is not None or self.call.done():
            # The service has answered for good: it ends the RPC right after a STOP (which the reader may not have
            # read yet), or the stream failed (the reader reports it). A write now would raise "RPC already
            # finished"; the text is not released either way, since waiting for its verdict ends at the STOP.
            return
        self._sizes.append(len(text))
        self.sent += len(text)
        await self.stage.call(lambda: self.call.write(safety_pb2.OutputChunk(text=text)))

    def check(self) -> None:
        """Raises what the reader met, as a StageDown counted against the stage's circuit."""
        if self.failure is None:
            return
        failure, self.failure = self.failure, None
        self.stage.breaker.record_failure()
        if isinstance(failure, StageDown):
            raise failure
        if isinstance(failure, grpc.aio.AioRpcError):
            raise StageDown(self.stage.name, f"{failure.code().name}: {failure.details()}") from None
        raise failure

    async def answered_up_to(self, position: int) -> None:
        """Waits (under the stage's timeout) until every window up to `position` has its verdict, or a STOP."""
        async def wait() -> None:
            while self.answered < position and self.stop is None and self.failure is None:
                if self.reader is None or self.reader.done():
                    break
                self._changed.clear()
                await self._changed.wait()

        await self.stage.call(wait)
        self.check()
        if self.answered < position and self.stop is None:
            raise StageDown(self.stage.name, "the safety service ended the stream early")

    async def close(self) -> None:
        """Half-closes the stream and waits for the server's last answer (so its span ends cleanly)."""
        async def close() -> None:
            await self.call.done_writing()
            if self.reader is not None:
                await self.reader
            await self.call.code()  # the RPC has ended: nothing left to cancel

        await self.stage.call(close)
        self.check()

    def cancel(self) -> None:
        for task in (self.opening, self.reader):
            if task is None:
                continue
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved: a failure no one awaited is not logged as lost
        if not self.call.done():
            self.call.cancel()


class OutputGuard:
    def __init__(self, stage: Stage, stub: safety_pb2_grpc.SafetyStub) -> None:
        self.stage = stage
        self.stub = stub
        self.release_ahead = int(stage.spec.options.get("release_ahead_chars", DEFAULT_RELEASE_AHEAD_CHARS))
        self.window_chars = int(stage.spec.options.get("window_chars", DEFAULT_WINDOW_CHARS))
        self.load_tiers = StreamInterval.parse(str(stage.spec.options.get("load_tiers", "")))
        self.open_answers = 0  # answers being moderated now

    def sizes(self) -> tuple[int, int]:
        """(window_chars, release_ahead_chars) for an answer starting now, scaled by the load tier."""
        scale = self.load_tiers.at(self.open_answers)
        return self.window_chars * scale, self.release_ahead * scale

    async def guard(self, events: AsyncIterator[Any], *, tenant: str, request_id: str, prompt_tokens: Callable[[], int],
                    degraded: list[str], on_redact: Callable[[], None] | None = None) -> AsyncIterator[Any]:
        """Wraps a stream of TextDelta / Finished / other events. `prompt_tokens` gives the usage to report when
        the guard stops the answer before the generator finished; `on_redact` is called when output PII is found
        (the caller stops the response from being cached)."""
        # Opened before the first event, so the policy arrives while the prompt is prefilled.
        windows: _Windows | None = _Windows(self.stub, self.stage, policy_id_for(tenant), request_id)
        gate: ReleaseGate | None = None
        completion_tokens = 0  # all tokens generated so far (usage on STOP)
        unreported = 0         # token counts not yet attached to an emitted delta
        ready = ""             # cleared by the rules, not yet released (waits for verdicts)
        unsent = ""            # released or ready, not yet sent for classification
        released = 0           # characters released so far
        fed = 0                # characters received from the generation so far
        held: list[TokenLogprobs] = []  # log-probs of text not yet released
        redacted_once = False

        def on_failure(down: StageDown) -> None:
            nonlocal windows
            if windows is not None:
                windows.cancel()
                windows = None
            if not self.stage.fail_open:
                raise self.stage.failed(down) from None
            log.warning("request %s: output guard down (%s); the rest of the answer is unmoderated", request_id,
                        down.reason)
            if self.stage.name not in degraded:
                degraded.append(self.stage.name)

        denied: list[str] = []  # deny-list categories, when the rules stopped the answer

        def stopped(usage: Usage | None = None) -> Finished:
            decision = windows.stop if windows is not None else None
            categories = denied or [c.category for c in (decision.categories if decision else []) if c.triggered]
            log.info("request %s: output stopped (%s)", request_id, ",".join(categories))
            return Finished(CONTENT_FILTER, usage or Usage(prompt_tokens(), completion_tokens), categories)

        async def moderate(text: str, final: bool) -> bool:
            """Runs `text` through the rules and the windows; False when the answer must stop."""
            nonlocal gate, ready, unsent, redacted_once
            if windows is None:  # fail open after a failure: the rules alone, if the policy ever arrived
                if gate is None:
                    ready += text
                else:
                    ready += (gate.finish() if final else gate.feed(text)).text
                return True
            step = None
            try:
                if gate is None:
                    gate = ReleaseGate(await windows.policy())
                step = gate.finish() if final else gate.feed(text)
                if step.denied:
                    denied.extend(sorted({f.category for f in step.denied}))
                    record_safety("output", "stop", denied)
                    return False
                if step.redacted:  # counted here, where output PII is redacted now (rare: not per token)
                    record_safety("output", "redact", [f.category for f in step.redacted])
                    if not redacted_once and on_redact is not None:
                        on_redact()
                    redacted_once = True
                ready += step.text
                unsent += step.text
                windows.check()
                if unsent and (final or len(unsent) >= window_chars or release_ahead == 0):
                    await windows.send(unsent)
                    unsent = ""
                # released + ready is what the client will have seen; at most `release_ahead` of it unclassified
                limit = windows.sent if final else released + len(ready) - release_ahead
                if windows.answered < limit:
                    if unsent:
                        await windows.send(unsent)
                        unsent = ""
                    await windows.answered_up_to(limit)
            except StageDown as down:
                on_failure(down)  # fail closed raises; fail open carries on with the rules alone
                if step is None:
                    ready += text
            return windows is None or windows.stop is None

        async def close_generation() -> None:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

        async def drained() -> Usage:
            """Stops the generation — each round adds what the engine produced, drained tokens included, to
            `produced` — and reports that, as the usage record will: the client is told what it is billed for.
            A stream that reports no rounds (not a Generator) falls back to the tokens the guard saw."""
            await close_generation()
            return Usage(prompt_tokens(), max(completion_tokens, produced.completion_tokens))

        produced = StreamTokens()  # every round of this answer adds what the engine produced, drained tokens too
        current_stream_tokens.set(produced)  # this answer's task context only (each choice streams in its own)

        self.open_answers += 1
        window_chars, release_ahead = self.sizes()
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    completion_tokens += event.token_count
                    unreported += event.token_count
                    if not event.text:
                        continue
                    fed += len(event.text)
                    if not await moderate(event.text, final=False):
                        yield stopped(await drained())
                        return
                    if ready:
                        released += len(ready)
                        yield TextDelta(ready, unreported)
                        ready, unreported = "", 0
                    if held and released == fed and not redacted_once:  # all the text they spell is out
                        yield from_held(held)
                elif isinstance(event, TokenLogprobs):
                    held.append(event)
                    if released == fed and not redacted_once:
                        yield from_held(held)
                elif isinstance(event, Finished):
                    if gate is not None or windows is None:
                        if not await moderate("", final=True):
                            yield stopped(event.usage)
                            return
                        if windows is not None:
                            try:
                                await windows.close()
                            except StageDown as down:
                                on_failure(down)
                    if ready:
                        yield TextDelta(ready, unreported)
                    if held and not redacted_once:
                        yield from_held(held)
                    yield event
                    return
                else:
                    yield event
        finally:
            self.open_answers -= 1
            if windows is not None:
                windows.cancel()
            await close_generation()
