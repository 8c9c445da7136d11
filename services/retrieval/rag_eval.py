"""End-to-end RAG accuracy: ingest the evaluation corpus for a tenant, ask its questions through the OpenAI facade
with retrieval on, and count how often the first citation is the answering document and how often the model's
answer states the fact (the year, the person, the visitor count, or the name asked for).

Run against a stack: python -m services.retrieval.rag_eval --api-key KEY --tenant TENANT [--questions 50]
(the key must belong to TENANT: the orchestrator retrieves for the key's tenant only).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass

import grpc
import openai
from sluice.v1 import retrieval_pb2_grpc

from services.common.settings import Settings
from services.retrieval.evaluation import ingest_corpus, load

_FACTS = re.compile(r"# The (?P<name>\S+) .*It opened in (?P<year>\d{4}) under the direction of (?P<person>[^,]+), "
                    r"and about (?P<visitors>[\d,]+) people", re.S)


@dataclass(frozen=True, slots=True)
class Outcome:
    question: str
    expected: str
    answer: str
    cited_right: bool
    answered_right: bool


def expected_answer(question: str, document: str) -> str:
    """The fact a corpus question asks for, read from its answering document."""
    facts = _FACTS.search(document)
    if facts is None:
        raise ValueError("not a document of the evaluation corpus")
    if question.startswith("In what year"):
        return facts["year"]
    if question.startswith("Who oversaw"):
        return facts["person"]
    if question.startswith("How many visitors"):
        return facts["visitors"]
    return facts["name"]  # "Which lighthouse ...?" asks for the name


def is_right(answer: str, expected: str) -> bool:
    """Case-insensitive containment, with thousands separators ignored (29,000 == 29000)."""
    def norm(text: str) -> str:
        return re.sub(r"(?<=\d),(?=\d{3})", "", text).lower()

    return norm(expected) in norm(answer)


def ask(client: openai.OpenAI, model: str, collection: str, question: str, gold_document: str,
        expected: str, max_tokens: int) -> Outcome:
    completion = client.chat.completions.create(
        model=model, temperature=0, max_tokens=max_tokens,
        messages=[{"role": "user", "content": question}],  # the retrieve stage adds its own instruction
        extra_body={"retrieval": {"collections": [collection], "top_k": 4}})
    answer = completion.choices[0].message.content or ""
    citations = (completion.model_extra or {}).get("citations") or []
    cited = bool(citations) and citations[0]["document_id"] == gold_document
    return Outcome(question, expected, answer, cited, is_right(answer, expected))


def evaluate(settings: Settings, api_key: str, tenant: str, questions: int = 50, collection: str = "rag_eval",
             max_tokens: int = 24) -> list[Outcome]:
    documents, asked = load(split="test")
    texts = {d["id"]: d["text"] for d in documents}
    with grpc.insecure_channel(settings.retrieval_url) as channel:
        ingest_corpus(retrieval_pb2_grpc.RetrievalStub(channel), collection, documents,
                      metadata=(("x-sluice-tenant", tenant),))
    client = openai.OpenAI(base_url=settings.public_base_url, api_key=api_key, max_retries=0, timeout=120)
    return [ask(client, settings.model_name, collection, q["question"], q["document_id"],
                expected_answer(q["question"], texts[q["document_id"]]), max_tokens) for q in asked[:questions]]


def summary(outcomes: list[Outcome]) -> str:
    n = len(outcomes)
    cited = sum(o.cited_right for o in outcomes)
    answered = sum(o.answered_right for o in outcomes)
    both = sum(o.cited_right and o.answered_right for o in outcomes)
    return (f"{n} held-out questions: first citation right {cited}/{n} ({cited / n:.0%}), answer right "
            f"{answered}/{n} ({answered / n:.0%}), both {both}/{n} ({both / n:.0%})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--tenant", required=True, help="the key's tenant (documents are ingested for it)")
    parser.add_argument("--questions", type=int, default=50)
    parser.add_argument("--verbose", action="store_true", help="print every question, expected fact and answer")
    args = parser.parse_args()
    outcomes = evaluate(Settings.from_env(), args.api_key, args.tenant, args.questions)
    if args.verbose:
        for o in outcomes:
            print(f"{'C' if o.cited_right else '-'}{'A' if o.answered_right else '-'} {o.question!r} "
                  f"expected {o.expected!r} got {o.answer!r}")
    print(summary(outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
