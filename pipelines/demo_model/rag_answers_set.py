"""Writes the frozen `sluice eval rag-answers` set: documents and questions the demo model never saw in training.

Names come from the held-out syllables (``served.SYLLABLES[1]``), questions use the held-out phrasings, and the seed
is not a training seed. 40 questions are answered by a name in one ingested document (a person or a place); 20 ask
about places that were never ingested, so the right answer is ``served.NOT_FOUND``.
Run: python -m pipelines.demo_model.rag_answers_set (rewrites tests/data/rag_answers/ identically).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from pipelines.demo_model.served import NOT_FOUND, make_document

OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "rag_answers"
SEED = 90210
NAME_ATTRIBUTES = ("person", "founder", "place")


def build(documents: int = 30, answerable: int = 40, unanswerable: int = 20) -> tuple[list[dict], list[dict]]:
    rng = random.Random(SEED)
    seen: set[str] = set()

    def fresh_document():  # noqa: ANN202 - a served.Document
        while True:
            doc = make_document(rng, 1)
            if doc.name not in seen:
                seen.add(doc.name)
                return doc

    docs = [fresh_document() for _ in range(documents)]
    absent = [fresh_document() for _ in range(unanswerable)]
    questions = []
    while len(questions) < answerable:
        doc = rng.choice(docs)
        facts = [f for f in doc.facts if f.attribute in NAME_ATTRIBUTES]
        if not facts:
            continue
        fact = rng.choice(facts)
        question = rng.choice(fact.questions[1])
        if any(q["question"] == question for q in questions):
            continue
        questions.append({"question": question, "expected": fact.value, "document_id": doc.doc_id})
    for doc in absent:
        fact = rng.choice([f for f in doc.facts if f.attribute in NAME_ATTRIBUTES] or list(doc.facts))
        questions.append({"question": rng.choice(fact.questions[1]), "expected": NOT_FOUND, "document_id": None})
    return [{"id": d.doc_id, "text": d.text} for d in docs], questions


def main() -> None:
    documents, questions = build()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "documents.jsonl").write_text("".join(json.dumps(d) + "\n" for d in documents))
    (OUT / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    print(f"{len(documents)} documents, {len(questions)} questions -> {OUT}")


if __name__ == "__main__":
    main()
