"""`sluice eval rag-answers`: grounded answers through the running stack, judged by exact name match.

The frozen set in tests/data/rag_answers (written by pipelines/demo_model/rag_answers_set.py; names the demo model
never saw in training) is ingested with `sluice ingest` (the authenticated API), then every question is asked
through the OpenAI facade with retrieval on, as a user would. An answerable question is right when the answer
contains the expected name exactly (case-sensitive); a question about a document that was never ingested is right
when the answer says it could not find it.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import openai

from services.cli.api import resolve_api_key
from services.cli.ingest import ingest
from services.common.settings import REPO_ROOT, Settings

SET_DIR = REPO_ROOT / "tests" / "data" / "rag_answers"
NOT_FOUND_MARK = "could not find"
REFUSED_MARK = "<refused: "  # an answer that never came: the request was refused (400)


@dataclass(frozen=True, slots=True)
class Outcome:
    question: str
    expected: str
    answer: str
    answerable: bool
    right: bool
    cited_right: bool


def load(set_dir: Path = SET_DIR) -> tuple[list[dict], list[dict]]:
    def read(name: str) -> list[dict]:
        return [json.loads(line) for line in (set_dir / name).read_text().splitlines() if line.strip()]

    return read("documents.jsonl"), read("questions.jsonl")


def is_right(answer: str, expected: str, answerable: bool) -> bool:
    if answerable:
        return expected in answer
    return NOT_FOUND_MARK in answer.lower()


def ingest_set(documents: list[dict], collection: str, api_key: str | None, settings: Settings) -> None:
    """Writes the documents as files under their ids and ingests them with `sluice ingest`."""
    with tempfile.TemporaryDirectory() as tmp:
        for doc in documents:
            path = Path(tmp) / doc["id"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(doc["text"])
        log = io.StringIO()
        if ingest([tmp], collection, api_key=api_key, settings=settings, out=log) != 0:
            raise RuntimeError(f"ingestion failed: {log.getvalue().strip()}")


def ask(client: openai.OpenAI, model: str, collection: str, question: dict, max_tokens: int) -> Outcome:
    """One question through the API. A refusal (e.g. the input guard's 400) is an answer the user did not get: it
    counts as wrong and is reported, instead of ending the evaluation."""
    answerable = question["document_id"] is not None
    try:
        completion = client.chat.completions.create(
            model=model, temperature=0, max_tokens=max_tokens,
            messages=[{"role": "user", "content": question["question"]}],  # the retrieve stage adds the passages
            extra_body={"retrieval": {"collections": [collection], "top_k": 4}})
    except openai.BadRequestError as exc:
        code = getattr(exc, "code", None) or "bad_request"
        return Outcome(question["question"], question["expected"], f"{REFUSED_MARK}{code}>", answerable, False, False)
    answer = completion.choices[0].message.content or ""
    citations = (completion.model_extra or {}).get("citations") or []
    cited = answerable and bool(citations) and citations[0]["document_id"].endswith(question["document_id"])
    return Outcome(question["question"], question["expected"], answer, answerable,
                   is_right(answer, question["expected"], answerable), cited)


def summary(outcomes: list[Outcome]) -> str:
    found = [o for o in outcomes if o.answerable]
    absent = [o for o in outcomes if not o.answerable]
    right = sum(o.right for o in found)
    refused = sum(o.right for o in absent)
    cited = sum(o.cited_right for o in found)
    blocked = sum(o.answer.startswith(REFUSED_MARK) for o in outcomes)
    return (f"answerable: {right}/{len(found)} right ({right / max(len(found), 1):.0%}), first citation right "
            f"{cited}/{len(found)}; not in the documents: {refused}/{len(absent)} said so "
            f"({refused / max(len(absent), 1):.0%})" + (f"; {blocked} refused by the API" if blocked else ""))


def run_cli(model: str | None = None, collection: str = "rag-answers", api_key: str | None = None,
            max_tokens: int = 24, verbose: bool = False) -> int:
    settings = Settings.from_env()
    key, _ = resolve_api_key(settings, api_key)
    documents, questions = load()
    try:
        ingest_set(documents, collection, key, settings)
        client = openai.OpenAI(base_url=settings.public_base_url, api_key=key or "none", max_retries=0, timeout=120)
        outcomes = [ask(client, model or settings.model_name, collection, q, max_tokens) for q in questions]
    except (openai.APIError, RuntimeError) as exc:
        print(f"sluice eval rag-answers: {exc}", file=sys.stderr)
        return 1
    if verbose:
        for o in outcomes:
            print(f"{'ok ' if o.right else 'BAD'} {o.question!r} expected {o.expected!r} got {o.answer!r}")
    print(f"rag-answers ({len(documents)} documents, {len(questions)} questions, "
          f"{model or settings.model_name}): {summary(outcomes)}")
    return 0
