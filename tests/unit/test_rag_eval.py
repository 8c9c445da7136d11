"""How the end-to-end RAG evaluation decides what the right answer is and whether an answer states it."""

from __future__ import annotations

import pytest

from services.retrieval.evaluation import load
from services.retrieval.rag_eval import expected_answer, is_right

DOC = ("# The Mifendra Lighthouse\n\nThe Mifendra lighthouse stands in Corvane Heights. Built from ochre brick, it "
       "guides fishing boats past the reef. It opened in 1929 under the direction of Mara Kowal, and about 29,000 "
       "people visit it every year.")


@pytest.mark.parametrize(("question", "expected"), [
    ("In what year did the Mifendra lighthouse open?", "1929"),
    ("Who oversaw the opening of the Mifendra lighthouse?", "Mara Kowal"),
    ("How many visitors does Mifendra lighthouse get annually?", "29,000"),
    ("Which lighthouse in Corvane Heights helps trawlers avoid the rocks?", "Mifendra"),
])
def test_the_expected_fact_is_read_from_the_answering_document(question: str, expected: str) -> None:
    assert expected_answer(question, DOC) == expected


def test_answers_match_case_and_thousands_separators_loosely_but_not_other_facts() -> None:
    assert is_right("About 29000 people a year.", "29,000")
    assert is_right("it was mara kowal", "Mara Kowal")
    assert not is_right("It opened in 1921.", "1929")
    assert not is_right("The Korula lighthouse.", "Mifendra")


def test_every_held_out_question_has_an_expected_fact() -> None:
    documents, questions = load(split="test")
    texts = {d["id"]: d["text"] for d in documents}
    assert len(questions) == 125
    assert all(expected_answer(q["question"], texts[q["document_id"]]) for q in questions)
