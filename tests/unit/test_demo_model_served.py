"""The demo model v2 corpus is built in the formats the platform serves, and its held-out sets stay held out."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from pipelines.demo_model import rag_answers_set, served
from pipelines.demo_model.tokenizer import render_chat
from services.orchestrator.pipeline.retrieve import DEFAULT_TOKEN_BUDGET, INSTRUCTION
from services.retrieval.rag_answers import is_right, load

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "sluice-demo"


@pytest.fixture(scope="module")
def corpus() -> list[served.Example]:
    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    return served.generate_v2(5, 4000, "train", tokenizer=tok)


def test_rag_examples_carry_the_retrieve_stage_message_within_its_token_budget(corpus) -> None:
    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    rag = [m for skill, m, _ in corpus if skill.startswith("rag_")]
    assert len(rag) > 500
    for messages in rag:
        context = [m for m in messages if m["role"] == "system" and m["content"].startswith(INSTRUCTION)]
        assert len(context) == 1
        lines = context[0]["content"][len(INSTRUCTION) + 2:].split("\n")
        assert all(re.match(r"\[[\w/.-]+\.md#0\] \S", line) for line in lines), lines
        assert 1 + len(tok.encode(INSTRUCTION).ids) + sum(len(tok.encode(line + "\n").ids) for line in lines) \
            <= DEFAULT_TOKEN_BUDGET + 1
        at = messages.index(context[0])  # after the leading system prompt, before the conversation
        assert all(m["role"] == "system" for m in messages[:at]) and messages[at + 1]["role"] == "user"


def test_answers_come_from_the_passages_or_say_they_are_not_there(corpus) -> None:
    for skill, messages, _ in corpus:
        if skill == "rag_answer":
            value = messages[-1]["content"].rstrip(".")
            assert value in next(m["content"] for m in messages if m["content"].startswith(INSTRUCTION))
        elif skill == "rag_not_found":
            assert messages[-1]["content"] == served.NOT_FOUND


def test_catalog_personas_and_history_are_in_the_mix(corpus) -> None:
    systems = {m["content"] for _, msgs, _ in corpus for m in msgs if m["role"] == "system"}
    assert "You are Sluice. Answer in one short sentence." in systems  # config/catalog.yaml's persona
    assert any(sum(m["role"] == "user" for m in msgs) >= 2 for _, msgs, _ in corpus)


def test_tool_calls_name_a_listed_tool_and_never_appear_without_tools(corpus) -> None:
    names = set()
    for _, messages, tools in corpus:
        text = render_chat(messages, tools)
        if not tools:
            assert "<tool_call>" not in text
            continue
        listed = {t["function"]["name"] for t in tools}
        for m in messages:
            for call in m.get("tool_calls") or []:
                assert call["function"]["name"] in listed
                names.add(call["function"]["name"])
                args = call["function"]["arguments"]
                assert isinstance(json.loads(args) if isinstance(args, str) else args, dict)
    assert len(names) > 30  # arbitrary tool names, not a fixed pair


def test_held_out_names_and_phrasings_never_reach_training(corpus) -> None:
    text = "\n".join(render_chat(m, t) for _, m, t in corpus)
    documents, questions = load()
    for doc in documents:
        assert doc["id"].split("/")[-1].removesuffix(".md").capitalize() not in text
    for q in questions:
        assert q["question"] not in text
        if q["document_id"] is not None:
            assert q["expected"] not in text
    held_topics = set(served.HELD_OUT_TOPICS)
    assert not any(m["content"] in {served.TOPICS[t] for t in held_topics} for _, msgs, _ in corpus for m in msgs)
    assert not set(served.SYLLABLES[0]) & set(served.SYLLABLES[1])


def test_rag_answers_set_is_frozen_and_judged_by_exact_name() -> None:
    documents, questions = rag_answers_set.build()
    assert (documents, questions) == load()
    assert sum(q["document_id"] is None for q in questions) == 20 and len(questions) == 60
    ids = {d["id"] for d in documents}
    assert all(q["document_id"] in ids for q in questions if q["document_id"] is not None)
    assert is_right("Mipmip Zoryadfyr.", "Mipmip Zoryadfyr", True)
    assert not is_right("Mipmip Zoryad.", "Mipmip Zoryadfyr", True)
    assert is_right("I could not find that in the documents.", served.NOT_FOUND, False)
    assert not is_right("Mipmip Zoryadfyr.", served.NOT_FOUND, False)


def test_generation_is_deterministic() -> None:
    a = served.generate_v2(11, 50)
    b = served.generate_v2(11, 50)
    assert a == b
    assert served.make_document(random.Random(1), 1) == served.make_document(random.Random(1), 1)


def test_the_training_clock_counts_a_long_pause_as_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.demo_model import train

    now = [100.0]
    monkeypatch.setattr(train.time, "monotonic", lambda: now[0])
    clock = train.ActiveClock(max_gap=30.0)
    now[0] += 2.0
    assert clock.tick() == 2.0
    now[0] += 600.0  # stopped with SIGSTOP while a benchmark ran: the budget is not spent meanwhile
    assert clock.tick() == 32.0
    now[0] += 1.5
    assert clock.tick() == 33.5


def test_training_names_are_copied_not_recalled() -> None:
    import random

    rng = random.Random(7)
    words = [served.syllable_word(rng, 0) for _ in range(4000)]
    letters = [w for w in words if not _made_of(w.lower(), served.SYLLABLES[0])]
    assert 0.35 < len(letters) / len(words) < 0.65  # half the training names come from the whole alphabet
    assert len({w[:3] for w in letters}) > 300  # far more beginnings than the syllable lists give
    assert not any(held in w.lower() for w in letters for held in served.SYLLABLES[1])


def _made_of(word: str, syllables: list[str]) -> bool:
    if not word:
        return True
    return any(word.startswith(s) and _made_of(word[len(s):], syllables) for s in syllables)


def test_a_refused_question_counts_as_wrong_and_the_evaluation_goes_on() -> None:
    import httpx
    import openai

    from services.retrieval.rag_answers import ask, summary

    class Refusing:
        class chat:  # noqa: N801 - the client's attribute path
            class completions:  # noqa: N801
                @staticmethod
                def create(**_: object) -> None:
                    response = httpx.Response(400, request=httpx.Request("POST", "http://stack/v1/chat/completions"))
                    raise openai.BadRequestError("rejected", response=response,
                                                 body={"code": "content_policy_violation"})

    question = {"question": "Under whose direction did the Zorqua bakery open?", "expected": "Mip Zor",
                "document_id": "docs/zorqua.md"}
    outcome = ask(Refusing(), "sluice-demo", "rag-answers", question, 24)  # type: ignore[arg-type]
    assert not outcome.right and outcome.answer == "<refused: content_policy_violation>"
    assert "1 refused by the API" in summary([outcome])
