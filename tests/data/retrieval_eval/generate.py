"""Generates the retrieval evaluation corpus (fictional places, so no model has seen the facts): 250 short markdown
documents and 250 questions, each answered by exactly one chunk. Deterministic: re-running rewrites the same files.

The questions come in two splits of 125: `tune` (the first 125, the set published before the split existed) is the
only one that retrieval settings may be chosen on; `test` is held out and is the one reported.

Half the questions name their subject (the lexical signal's strength); the other half describe it without its name
— by place, by paraphrased purpose, colour and material, or by who opened it when — which needs the dense signal or
both. Hybrid retrieval should beat both. Run: python tests/data/retrieval_eval/generate.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
DOMAINS = {  # domain word, plural folder, purpose phrases (document wording, question wording)
    "lighthouse": ("lighthouses", [("guides fishing boats past the reef", "helps trawlers avoid the rocks"),
                                   ("marks the harbour entrance", "shows ships where the port begins"),
                                   ("warns ferries about sandbanks", "alerts passenger boats to shallow sand")]),
    "observatory": ("observatories", [("tracks comets and asteroids", "follows icy wanderers and space rocks"),
                                      ("measures variable stars", "records stars whose brightness changes"),
                                      ("trains astronomy students", "teaches young stargazers")]),
    "library": ("libraries", [("preserves maritime maps", "keeps old nautical charts safe"),
                              ("lends rare music scores", "loans unusual sheet music"),
                              ("archives local newspapers", "stores old town gazettes")]),
    "bridge": ("bridges", [("carries a freight railway", "supports cargo trains"),
                           ("links two market towns", "connects a pair of trading villages"),
                           ("crosses a glacial river", "spans a meltwater stream")]),
    "brewery": ("breweries", [("brews a smoked barley ale", "makes a beer with a campfire flavour"),
                              ("ferments cider from wild apples", "produces a drink from foraged fruit"),
                              ("produces a honey mead", "makes a wine from bees' nectar")]),
}
COLOURS = [("crimson", "deep red"), ("ochre", "yellowish brown"), ("azure", "sky blue"), ("ivory", "off-white"),
           ("charcoal", "dark grey"), ("emerald", "bright green"), ("violet", "purple"), ("amber", "golden orange")]
MATERIALS = [("granite", "hard grey stone"), ("timber", "wood"), ("limestone", "pale sedimentary rock"),
             ("cast iron", "moulded metal"), ("brick", "fired clay blocks"), ("sandstone", "sandy rock")]
PLACES = ["Harrowmere", "Quillon Bay", "the Estrel Valley", "Dunmarrow", "Saltreach", "Corvane Heights",
          "the Isle of Pell", "Brackenford", "Ostwick", "Lunmoor"]
FIRST = ["Mara", "Tobias", "Ilse", "Oren", "Priya", "Cassius", "Noor", "Edda", "Felix", "Yara", "Lucan", "Sabine"]
LAST = ["Okonkwo", "Vantreck", "Holloway", "Szabo", "Marchetti", "Lindqvist", "Adeyemi", "Ferreira", "Kowal"]
SYLLABLES = ["vel", "dra", "kor", "ath", "mi", "sen", "tal", "ore", "quin", "bar", "lys", "tor", "fen", "ula", "zar",
             "eth", "nov", "ric", "mal", "ost"]


def _name(rng: random.Random, used: set[str]) -> str:
    while True:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize()
        if name not in used:
            used.add(name)
            return name


def build(seed: int = 7, per_domain: int = 50) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    used: set[str] = set()
    facts = []
    for domain, (folder, purposes) in DOMAINS.items():
        for _ in range(per_domain):
            facts.append({"domain": domain, "folder": folder, "name": _name(rng, used),
                          "colour": rng.choice(COLOURS), "material": rng.choice(MATERIALS),
                          "purpose": rng.choice(purposes), "place": rng.choice(PLACES),
                          "year": rng.randint(1780, 1990), "person": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                          "visitors": rng.randint(2, 90) * 1000})

    def signatures(f: dict) -> dict[str, tuple]:
        return {"place": (f["domain"], f["place"], f["purpose"]),
                "looks": (f["domain"], f["colour"], f["material"], f["purpose"]),
                "opened": (f["domain"], f["person"], f["year"])}

    counts: dict[tuple, int] = {}
    for f in facts:
        for sig in signatures(f).values():
            counts[sig] = counts.get(sig, 0) + 1
    documents, questions = [], []
    for f in facts:
        name, domain = f["name"], f["domain"]
        doc_id = f"{f['folder']}/{name.lower()}.md"
        documents.append({"id": doc_id, "text": (
            f"# The {name} {domain.capitalize()}\n\n"
            f"The {name} {domain} stands in {f['place']}. Built from {f['colour'][0]} {f['material'][0]}, it "
            f"{f['purpose'][0]}. It opened in {f['year']} under the direction of {f['person']}, and about "
            f"{f['visitors']:,} people visit it every year.")})
        unique = [kind for kind, sig in signatures(f).items() if counts[sig] == 1]  # answerable by one document
        if rng.random() < 0.5 or not unique:
            q = rng.choice([f"In what year did the {name} {domain} open?",
                            f"Who oversaw the opening of the {name} {domain}?",
                            f"How many visitors does {name} {domain} get annually?"])
        else:
            q = {"place": f"Which {domain} in {f['place']} {f['purpose'][1]}?",
                 "looks": f"Which {domain} built of {f['colour'][1]} {f['material'][1]} {f['purpose'][1]}?",
                 "opened": f"Which {domain} did {f['person']} open in {f['year']}?"}[rng.choice(unique)]
        questions.append({"question": q, "chunk_id": f"{doc_id}#0", "document_id": doc_id})
    rng.shuffle(questions)
    for n, question in enumerate(questions):
        question["split"] = "tune" if n < len(questions) // 2 else "test"
    return documents, questions


def main() -> None:
    documents, questions = build()
    (HERE / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in documents))
    (HERE / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    print(f"{len(documents)} documents, {len(questions)} questions")


if __name__ == "__main__":
    main()
