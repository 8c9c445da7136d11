"""Training conversations in the formats the platform serves (demo model v2).

The prompts are built with the serving code itself, not re-typed: the retrieve stage's passage message
(`retrieve.with_context` / `Passage.line`), the catalog's persona system prompts (`config/catalog.yaml`), the
persona precedence (`PersonaBook.apply`) and tool definitions shaped like `ToolSpec.as_template_tool`. The chat
template then renders them exactly as the engine sees them.

Held out from training (``split=1``): the syllables names are made of, the question phrasings, some open-question
topics, and the tool names. Every generator returns ``(skill, messages, tools)`` like ``corpus.py``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines.demo_model import corpus as v1
from pipelines.demo_model.corpus import Example
from services.orchestrator.chat_request import ChatMessage, ChatRequest
from services.orchestrator.personas import PersonaBook
from services.orchestrator.pipeline.retrieve import DEFAULT_TOKEN_BUDGET, Passage, fit_budget, with_context

NOT_FOUND = "I could not find that in the documents."
CATALOG = Path(__file__).resolve().parents[2] / "config" / "catalog.yaml"

# Names are made of syllables; the two lists are disjoint, so an evaluation name was never seen in training.
_TRAIN_SYLLABLES = ("ka lo mi ra ven to zu shi bel dor fa ni qu es tal mor iv an ek sol pra gi ud rin ha co ly ber nox "
                    "tes dra kor ath sen ore bar lys fen ula zar eth nov ric mal ost pel gan vor im sar tek lum bri ce")
_HELD_OUT_SYLLABLES = "qua zim rok jel vas pum tib hex gor wen ulm yad fyr kex daz mip sov lut nabe zor"
SYLLABLES = (_TRAIN_SYLLABLES.split(), _HELD_OUT_SYLLABLES.split())
KINDS = ("lighthouse", "bridge", "museum", "bakery", "observatory", "library", "brewery", "theatre", "garden",
         "school", "festival", "mill", "harbour", "station", "orchard", "clinic", "archive", "workshop")
PLACE_SUFFIX = ("", " Bay", " Heights", " Valley", "ford", "wick", "mere", " Harbour")
PERSONA_PROMPTS = ("You are a helpful assistant.", "You are Sluice, a concise assistant.",
                   "You are a friendly support agent. Keep answers short.",
                   "You answer questions for the staff of a small company.")


# Training names are half syllable words and half letter strings drawn from the whole alphabet: with only ~60
# syllables the model learns which tokens make a name and recalls them, instead of copying the name out of the
# passage (run 2: 65% right on training syllables, 5% on held-out ones). Letter strings never hold a held-out
# syllable, so evaluation names stay unseen.
RANDOM_NAME_SHARE = 0.5
_CONSONANTS = "bcdfghjklmnprstvwxyz"
_ONSETS = tuple(_CONSONANTS) + ("br", "ch", "dr", "fl", "gr", "kl", "pr", "sh", "st", "th", "tr", "vl", "zh")
_VOWELS = ("a", "e", "i", "o", "u", "y", "ae", "ai", "ei", "ia", "io", "ou")


def letter_word(rng: random.Random, parts: tuple[int, int] = (2, 3)) -> str:
    """A pronounceable word from any letters (``parts`` syllables, sometimes a closing consonant)."""
    while True:
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(rng.randint(*parts)))
        if rng.random() < 0.4:
            word += rng.choice(_CONSONANTS)
        if not any(held in word for held in SYLLABLES[1]):
            return word.capitalize()


def syllable_word(rng: random.Random, split: int, parts: tuple[int, int] = (2, 3)) -> str:
    if split == 0 and rng.random() < RANDOM_NAME_SHARE:
        return letter_word(rng, parts)
    return "".join(rng.choice(SYLLABLES[split]) for _ in range(rng.randint(*parts))).capitalize()


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def person(rng: random.Random, split: int) -> str:
    if split == 0 and rng.random() < 0.35:
        return f"{rng.choice(v1.FIRST)} {rng.choice(v1.LAST)}"
    return f"{syllable_word(rng, split, (2, 2))} {syllable_word(rng, split)}"


# ---- system prompts: the catalog's personas and a few others, applied by the platform's own precedence ----

def _catalog_personas() -> PersonaBook:
    return PersonaBook.from_dict(yaml.safe_load(CATALOG.read_text()))


_BOOK = _catalog_personas()


def with_persona(rng: random.Random, messages: list[ChatMessage]) -> list[ChatMessage]:
    """No system prompt (the demo model has no default), a catalog persona, or another system prompt."""
    roll = rng.random()
    if roll < 0.45 or not _BOOK.personas:
        return messages
    request = ChatRequest(model="sluice-demo", messages=messages)
    if roll < 0.75:
        request.persona = rng.choice(sorted(_BOOK.personas))
        return _BOOK.apply(request, model_system_prompt=None, tenant=None).messages
    return _BOOK.apply(request, model_system_prompt=rng.choice(PERSONA_PROMPTS), tenant=None).messages


# ---- retrieval-grounded answers, in the retrieve stage's layout ----

@dataclass(frozen=True, slots=True)
class Fact:
    attribute: str  # person | place | year | count | founder
    value: str
    sentence: str
    questions: tuple[tuple[str, ...], tuple[str, ...]]  # (train phrasings, held-out phrasings)


@dataclass(frozen=True, slots=True)
class Document:
    doc_id: str
    name: str
    kind: str
    text: str
    facts: tuple[Fact, ...]


def make_document(rng: random.Random, split: int, name: str | None = None, kind: str | None = None) -> Document:
    name = name or syllable_word(rng, split)
    kind = kind or rng.choice(KINDS)
    the = f"the {name} {kind}"
    boss, founder = person(rng, split), person(rng, split)
    place = syllable_word(rng, split) + rng.choice(PLACE_SUFFIX)
    year, count = str(rng.randint(1780, 2020)), f"{rng.randint(2, 95) * 1000:,}"
    facts = {
        "person": Fact("person", boss, rng.choice([f"{cap(the)} is run by {boss}.", f"Today {boss} manages {the}.",
                                                   f"{boss} is the director of {the}."]),
                       ((f"Who runs {the}?", f"Who manages {the}?", f"Who is the director of {the}?"),
                        (f"Who is in charge of {the}?", f"Which person directs {the}?"))),
        "founder": Fact("founder", founder, rng.choice([f"It was founded by {founder}.",
                                                        f"{cap(the)} was started by {founder}."]),
                        ((f"Who founded {the}?", f"Who oversaw the opening of {the}?", f"Who started {the}?"),
                         (f"Under whose direction did {the} open?", f"Who was the founder of {the}?"))),
        "place": Fact("place", place, rng.choice([f"{cap(the)} stands in {place}.",
                                                  f"It is located in {place}."]),
                      ((f"Where is {the}?", f"In which town is {the}?", f"Where is {the} located?"),
                       (f"In what place does {the} stand?", f"Where can I find {the}?"))),
        "year": Fact("year", year, rng.choice([f"It opened in {year}.", f"Its doors opened in {year}."]),
                     ((f"When did {the} open?", f"In what year did {the} open?"),
                      (f"What year did {the} first open?",))),
        "count": Fact("count", count, rng.choice([f"About {count} people visit it every year.",
                                                  f"Each year roughly {count} visitors come."]),
                      ((f"How many people visit {the} each year?", f"How many visitors does {the} get?"),
                       (f"How many visitors does {the} get annually?",))),
    }
    chosen = ["person", *rng.sample(["founder", "place", "year", "count"], rng.randint(1, 4))]
    rng.shuffle(chosen)
    kept = [facts[a] for a in chosen]
    sentences = [f.sentence for f in kept]
    if "founder" in chosen and "year" in chosen and rng.random() < 0.5:  # the evaluation corpus' combined sentence
        sentences.remove(facts["year"].sentence)
        at = sentences.index(facts["founder"].sentence)
        sentences[at] = f"It opened in {year} under the direction of {founder}."
    body = " ".join(sentences)
    if rng.random() < 0.7:
        body = f"# The {name} {kind.capitalize()}\n\n{body}"
    folder = rng.choice((f"{kind}s", "docs", "notes", "kb"))
    return Document(f"{folder}/{name.lower()}.md", name, kind, body, tuple(kept))


def passages_for(rng: random.Random, docs: list[Document]) -> list[Passage]:
    """Scored like retrieval hits: the list the retrieve stage receives, best first."""
    scores = sorted((rng.uniform(0.2, 0.9) for _ in docs), reverse=True)
    return [Passage(d.doc_id, f"{d.doc_id}#0", d.text, s) for d, s in zip(docs, scores, strict=True)]


def count_tokens(text: str) -> int:
    """The serving count (the deployment's tokenizer) when generate_v2 was given one, else the stage's default."""
    return len(_TOKENIZER[0].encode(text).ids) if _TOKENIZER else max(1, len(text) // 4)


_TOKENIZER: list[Any] = []


def retrieved(rng: random.Random, docs: list[Document]) -> list[Document]:
    """The documents whose passages survive the stage's token budget (`fit_budget`), as served."""
    kept = fit_budget(passages_for(rng, docs), count_tokens, DEFAULT_TOKEN_BUDGET)
    ids = [p.document_id for p in kept]
    return [d for d in docs if d.doc_id in ids]


def rag_conversation(rng: random.Random, history: list[ChatMessage], question: str, answer: str,
                     docs: list[Document]) -> list[dict[str, Any]]:
    messages = with_persona(rng, [*history, ChatMessage("user", question)])
    grounded = with_context(messages, passages_for(rng, docs))
    return [m.as_template_dict() for m in grounded] + [{"role": "assistant", "content": answer}]


ANSWERABLE = 0.8  # run 1 used 0.7 and fell back to the not-found reply for most questions


def gen_rag(rng: random.Random, split: int) -> Example:
    """A question answered from one of 1-4 retrieved passages (distractors of the same kind), or from none."""
    answerable = rng.random() < ANSWERABLE
    kind = rng.choice(KINDS)
    n_docs = rng.choices((1, 2, 3, 4), (1, 2, 3, 4))[0]  # served with top_k 4: mostly several passages
    docs = [make_document(rng, split, kind=kind if rng.random() < 0.6 else None) for _ in range(n_docs)]
    docs = retrieved(rng, docs) or docs[:1]
    if answerable:
        target = rng.randrange(len(docs)) if rng.random() < 0.4 else 0
        fact = rng.choice(docs[target].facts)
        question, answer = rng.choice(fact.questions[split]), f"{fact.value}."
    else:
        absent = make_document(rng, split, kind=kind)
        question, answer = rng.choice(rng.choice(absent.facts).questions[split]), NOT_FOUND
    history: list[ChatMessage] = []
    if rng.random() < 0.2:
        q, a = rng.choice(v1.SMALL[0])
        history = [ChatMessage("user", q), ChatMessage("assistant", a)]
    skill = "rag_answer" if answerable else "rag_not_found"
    return skill, rag_conversation(rng, history, question, answer, docs), None


# ---- open questions: one short sentence that names the subject ----

TOPICS: dict[str, str] = {
    "GPU": "A GPU is a processor built to do many calculations in parallel, for graphics and machine learning.",
    "CPU": "A CPU is the main processor of a computer; it runs the instructions of programs.",
    "database": "A database is an organised collection of data that programs can store and query.",
    "compiler": "A compiler is a program that translates source code into machine code.",
    "router": "A router is a device that forwards data packets between networks.",
    "password": "A password is a secret word or phrase used to prove who you are.",
    "cloud": "A cloud is a mass of tiny water droplets or ice crystals floating in the sky.",
    "volcano": "A volcano is an opening in the earth's crust where molten rock comes out.",
    "photosynthesis": "Photosynthesis is how plants turn light, water and carbon dioxide into sugar and oxygen.",
    "gravity": "Gravity is the force that pulls masses towards each other.",
    "rainbow": "A rainbow is an arc of colours made when sunlight is split by raindrops.",
    "vaccine": "A vaccine trains the immune system to recognise a germ before it causes illness.",
    "battery": "A battery stores chemical energy and releases it as electricity.",
    "bicycle": "A bicycle is a two-wheeled vehicle that you move by pedalling.",
    "piano": "A piano is a musical instrument whose keys make hammers strike strings.",
    "recipe": "A recipe is a list of ingredients and steps for making a dish.",
    "budget": "A budget is a plan for how much money you will spend and save.",
    "email": "An email is a message sent electronically from one account to another.",
    "website": "A website is a set of linked pages that you open in a web browser.",
    "algorithm": "An algorithm is a step-by-step procedure for solving a problem.",
    "spreadsheet": "A spreadsheet is a grid of cells for organising numbers and doing calculations.",
    "planet": "A planet is a large body that orbits a star.",
    "comet": "A comet is a ball of ice and dust that orbits the sun and grows a tail near it.",
    "ocean": "An ocean is a huge body of salt water that covers much of the earth.",
    "desert": "A desert is a dry region that gets very little rain.",
    "glacier": "A glacier is a slow-moving river of ice.",
    "earthquake": "An earthquake is a sudden shaking of the ground caused by moving rock.",
    "hurricane": "A hurricane is a powerful storm with strong winds that forms over warm seas.",
    "telescope": "A telescope is an instrument that makes distant objects look closer.",
    "microscope": "A microscope is an instrument that makes very small things look larger.",
    "magnet": "A magnet is an object that attracts iron and has a north and a south pole.",
    "atom": "An atom is the smallest unit of a chemical element.",
    "cell": "A cell is the smallest living unit of a plant or animal.",
    "virus": "A virus is a tiny germ that can only multiply inside living cells.",
    "democracy": "Democracy is a system of government in which citizens choose their leaders by voting.",
    "library": "A library is a place where books and other media are kept for people to borrow.",
    "museum": "A museum is a building where objects of art, history or science are kept and shown.",
    "passport": "A passport is an official document that proves your identity when you travel abroad.",
    "mortgage": "A mortgage is a loan used to buy a home, paid back over many years.",
    "inflation": "Inflation is the general rise of prices over time.",
    "tax": "A tax is money that people and companies must pay to the government.",
    "contract": "A contract is an agreement between parties that the law can enforce.",
    "neural network": "A neural network is a model made of layers of simple units that learns from examples.",
    "language model": "A language model is a program that predicts the next words of a text.",
    "operating system": "An operating system is the software that manages a computer's hardware and programs.",
    "firewall": "A firewall is a system that blocks unwanted network traffic.",
    "keyboard": "A keyboard is a set of keys for typing text into a computer.",
    "printer": "A printer is a device that puts text and images onto paper.",
    "camera": "A camera is a device that records images.",
    "satellite": "A satellite is an object that orbits a planet.",
    "rocket": "A rocket is a vehicle pushed forward by the hot gas it throws out.",
    "engine": "An engine is a machine that turns energy into motion.",
    "bridge": "A bridge is a structure that carries a road or path over an obstacle.",
    "tree": "A tree is a tall plant with a wooden trunk and branches.",
    "forest": "A forest is a large area covered with trees.",
    "river": "A river is a natural stream of fresh water flowing to the sea or a lake.",
    "mountain": "A mountain is a large natural rise of the earth's surface.",
    "island": "An island is a piece of land surrounded by water.",
    "coffee": "Coffee is a drink made from roasted coffee beans.",
    "tea": "Tea is a drink made by soaking dried tea leaves in hot water.",
    "bread": "Bread is a food baked from flour, water and usually yeast.",
    "cheese": "Cheese is a food made from milk curds.",
    "chocolate": "Chocolate is a sweet food made from roasted cocoa beans.",
    "vitamin": "A vitamin is a nutrient the body needs in small amounts.",
    "protein": "A protein is a large molecule that builds and repairs the body.",
    "muscle": "A muscle is tissue that contracts to move the body.",
    "heart": "The heart is the organ that pumps blood around the body.",
    "brain": "The brain is the organ that controls thought, memory and movement.",
    "dictionary": "A dictionary is a book or list that explains the meanings of words.",
    "poem": "A poem is a piece of writing that uses rhythm and imagery.",
    "novel": "A novel is a long written story.",
    "guitar": "A guitar is a string instrument played by plucking or strumming.",
    "violin": "A violin is a string instrument played with a bow.",
    "football": "Football is a team sport in which players kick a ball into a goal.",
    "chess": "Chess is a board game for two players who try to checkmate the other's king.",
    "marathon": "A marathon is a running race of about 42 kilometres.",
    "elephant": "An elephant is a very large mammal with a trunk and tusks.",
    "dolphin": "A dolphin is a clever sea mammal that breathes air.",
    "penguin": "A penguin is a bird that cannot fly but swims very well.",
    "bee": "A bee is an insect that collects nectar and makes honey.",
    "API": "An API is a defined way for one program to ask another program to do something.",
    "server": "A server is a computer that provides data or services to other computers.",
    "cache": "A cache is a small fast store that keeps copies of data used often.",
    "kernel": "A kernel is the core of an operating system that controls the hardware.",
    "container": "A container is a packaged program with everything it needs to run in isolation.",
    "blockchain": "A blockchain is a shared ledger of records linked by cryptographic hashes.",
}
HELD_OUT_TOPICS = ("GPU", "volcano", "vaccine", "telescope", "inflation", "firewall", "glacier", "penguin",
                   "violin", "cache", "passport", "comet", "protein", "satellite", "chess")
OPEN_Q = (
    ["What is {a} {t}?", "Explain what {a} {t} is.", "Tell me about {t}.", "What does {t} mean?",
     "Define {t}.", "What's {a} {t}?", "explain {t}", "Can you explain {t}?"],
    ["Describe {t} in one sentence.", "Give me a short explanation of {t}.", "What exactly is {a} {t}?"],
)
JOKES = ("Why did the computer go to the doctor? It had a virus.",
         "Why do programmers prefer dark mode? Because light attracts bugs.",
         "What do you call a fish without eyes? A fsh.",
         "Why was the math book sad? It had too many problems.")
JOKE_Q = (["Tell me a joke", "Tell me a joke.", "Do you know a joke?", "Make me laugh.", "Say something funny."],
          ["Got a joke for me?", "I'd like to hear a joke."])


def article(topic: str) -> str:
    return "an" if topic[0].lower() in "aeiou" else "a"


def open_topics(split: int) -> list[str]:
    return [t for t in TOPICS if (t in HELD_OUT_TOPICS) == bool(split)]


def gen_open(rng: random.Random, split: int) -> Example:
    if rng.random() < 0.12:
        msgs = with_persona(rng, [ChatMessage("user", rng.choice(JOKE_Q[split]))])
        return "open_joke", [m.as_template_dict() for m in msgs] + [
            {"role": "assistant", "content": rng.choice(JOKES)}], None
    topic = rng.choice(open_topics(split))
    q = rng.choice(OPEN_Q[split]).format(a=article(topic), t=topic)
    msgs = with_persona(rng, [ChatMessage("user", q)])
    return "open_question", [m.as_template_dict() for m in msgs] + [
        {"role": "assistant", "content": TOPICS[topic]}], None


# ---- tools with arbitrary names and schemas: call when the request needs one, answer otherwise ----

@dataclass(frozen=True, slots=True)
class ToolKind:
    nouns: tuple[str, ...]
    description: str
    params: dict[str, str]  # name -> JSON type
    requests: tuple[str, ...]  # templates over the params
    fill: Callable[[random.Random, int], dict[str, str]]
    answer: str  # template over the params and {result}
    result: Callable[[random.Random], str]


def _city(rng: random.Random, split: int) -> str:
    return rng.choice(v1.CITIES) if split == 0 and rng.random() < 0.5 else syllable_word(rng, split)


TOOL_KINDS: tuple[ToolKind, ...] = (
    ToolKind(("weather", "forecast"), "Get the current weather for a city.", {"city": "string"},
             ("What's the weather in {city}?", "Is it raining in {city}?", "How warm is it in {city} today?",
              "weather {city}"), lambda r, s: {"city": _city(r, s)}, "In {city} it is {result}.",
             lambda r: f"{r.randint(-5, 35)} degrees and {r.choice(['sunny', 'cloudy', 'rainy'])}"),
    ToolKind(("order_status", "order"), "Look up the status of a customer order by its id.", {"order_id": "string"},
             ("Where is my order {order_id}?", "What is the status of order {order_id}?",
              "Has order {order_id} shipped yet?"), lambda r, s: {"order_id": f"A{r.randint(1000, 99999)}"},
             "Order {order_id} is {result}.", lambda r: r.choice(["shipped", "being packed", "delivered"])),
    ToolKind(("email", "mail"), "Send an email to a person.", {"to": "string", "subject": "string"},
             ("Send an email to {to} about {subject}.", "Email {to} with the subject {subject}.",
              "Please mail {to} about {subject}."),
             lambda r, s: {"to": person(r, s).split()[0].lower() + "@example.com",
                           "subject": r.choice(["the meeting", "lunch", "the report", "the invoice"])},
             "I sent the email to {to}.", lambda r: "sent"),
    ToolKind(("translate", "translation"), "Translate text into another language.",
             {"text": "string", "language": "string"},
             ("Translate '{text}' into {language}.", "How do you say '{text}' in {language}?"),
             lambda r, s: {"text": r.choice(["good morning", "thank you", "where is the station", "see you soon"]),
                           "language": r.choice(["French", "German", "Spanish", "Italian", "Japanese"])},
             "In {language}: {result}.", lambda r: syllable_word(r, 0)),
    ToolKind(("stock_price", "quote"), "Get the latest stock price for a ticker symbol.", {"symbol": "string"},
             ("What is the stock price of {symbol}?", "How is {symbol} trading?", "Price of {symbol} shares?"),
             lambda r, s: {"symbol": "".join(r.choice("ABCDEFGHKLMNPRSTXZ") for _ in range(r.randint(3, 4)))},
             "{symbol} trades at {result}.", lambda r: f"{r.randint(5, 900)}.{r.randint(10, 99)} dollars"),
    ToolKind(("reminder", "alarm"), "Set a reminder at a time.", {"text": "string", "time": "string"},
             ("Remind me to {text} at {time}.", "Set a reminder at {time} to {text}."),
             lambda r, s: {"text": r.choice(["call mum", "buy milk", "water the plants", "send the report"]),
                           "time": f"{r.randint(6, 22)}:{r.choice(['00', '15', '30', '45'])}"},
             "I will remind you at {time}.", lambda r: "ok"),
    ToolKind(("user", "account"), "Look up a user account by username.", {"username": "string"},
             ("Look up the user {username}.", "Find the account of {username}.", "Who is user {username}?"),
             lambda r, s: {"username": syllable_word(r, s).lower() + str(r.randint(1, 99))},
             "{username}: {result}.", lambda r: f"active since {r.randint(2010, 2026)}"),
    ToolKind(("flight", "flights"), "Search flights between two cities.", {"origin": "string", "destination": "string"},
             ("Find me a flight from {origin} to {destination}.", "Are there flights from {origin} to {destination}?"),
             lambda r, s: {"origin": _city(r, s), "destination": _city(r, s)},
             "The next flight from {origin} to {destination} is {result}.",
             lambda r: f"at {r.randint(6, 22)}:{r.choice(['05', '20', '40'])}"),
)
VERBS = ("get", "fetch", "lookup", "find", "check", "query", "search")
TIME_TOOL_Q = ("What time is it in {city}?", "What's the current time in {city}?", "Tell me the time in {city}.")


def tool_name(rng: random.Random, kind: ToolKind, split: int) -> str:
    noun = rng.choice(kind.nouns)
    roll = rng.random()
    if split == 1 or roll < 0.35:  # an arbitrary prefix made of syllables (held-out syllables for evaluation)
        return f"{syllable_word(rng, split, (1, 2)).lower()}_{noun}"
    return noun if roll < 0.55 else f"{rng.choice(VERBS)}_{noun}"


def tool_def(name: str, description: str, params: dict[str, str]) -> dict[str, Any]:
    """Shaped like ToolSpec.as_template_tool(): what the chat template renders into the system turn."""
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": {p: {"type": t} for p, t in params.items()}, "required": list(params)}}}


def call_message(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The assistant turn as the tool runner appends it: OpenAI-shaped, arguments as JSON text."""
    return ChatMessage("assistant", "", tool_calls=[{"id": "call_0", "type": "function", "function": {
        "name": name, "arguments": json.dumps(arguments)}}]).as_template_dict()


def _toolbox(rng: random.Random, split: int, needed: dict[str, Any] | None) -> list[dict[str, Any]]:
    others = rng.sample(TOOL_KINDS, rng.randint(0, 2))
    tools = [tool_def(tool_name(rng, k, split), k.description, k.params) for k in others]
    if rng.random() < 0.3:
        tools.append(rng.choice([v1.CALC, v1.TIME]))
    if needed is not None:
        tools.append(needed)
    names, unique = set(), []
    for t in tools:
        if t["function"]["name"] not in names:
            names.add(t["function"]["name"])
            unique.append(t)
    rng.shuffle(unique)
    return unique


def _no_tool_turn(rng: random.Random, split: int) -> list[dict[str, Any]]:
    roll = rng.random()
    if roll < 0.4:
        return gen_open(rng, split)[1]
    if roll < 0.6:
        return v1.gen_greeting(rng, split)[1]
    if roll < 0.8:
        return v1.gen_fact(rng, split)[1]
    return gen_rag(rng, split)[1]


def gen_tool_use(rng: random.Random, split: int) -> Example:
    """Tools listed: the request needs one of them (call it, then answer from its result) or none (answer)."""
    if rng.random() < 0.4:
        msgs = _no_tool_turn(rng, split)
        return "tool_not_needed", msgs, _toolbox(rng, split, None)
    kind = rng.choice(TOOL_KINDS)
    name = tool_name(rng, kind, split)
    args = kind.fill(rng, split)
    needed = tool_def(name, kind.description, kind.params)
    head = with_persona(rng, [ChatMessage("user", rng.choice(kind.requests).format(**args))])
    msgs = [m.as_template_dict() for m in head] + [call_message(name, args)]
    if rng.random() < 0.4:
        result = kind.result(rng)
        msgs += [{"role": "tool", "content": result, "tool_call_id": "call_0"},
                 {"role": "assistant", "content": kind.answer.format(result=result, **args)}]
    return "tool_use", msgs, _toolbox(rng, split, needed)


ARITH_Q = (["What is {a} {w} {b}?", "What is {a} {o} {b}?", "Calculate {a} {o} {b}.", "{a} {o} {b}",
            "How much is {a} {w} {b}?", "Compute {a} {w} {b}.", "what's {a}{o}{b}?"],
           ["Could you work out {a} {w} {b}?", "Please calculate {a} {w} {b}.", "{a} {o} {b} equals what?"])


def arithmetic_question(rng: random.Random, split: int) -> tuple[str, str, str]:
    """(question, expression, value) for + - * / on small numbers."""
    op = rng.choice("+-*/")
    a = rng.randint(2, 999) if rng.random() < 0.5 else rng.randint(10, 99)
    b = rng.randint(2, 99)
    word = {"*": "times", "+": "plus", "-": "minus", "/": "divided by"}[op]
    value = {"*": a * b, "+": a + b, "-": a - b, "/": round(a / b, 4)}[op]
    q = rng.choice(ARITH_Q[split]).format(a=a, b=b, o=op, w=word)
    return q, f"{a} {op} {b}", str(value)


def gen_calculator(rng: random.Random, split: int) -> Example:
    """Arithmetic with a calculator among the tools: call it; with its result in a tool turn: state the result."""
    q, expr, value = arithmetic_question(rng, split)
    head = with_persona(rng, [ChatMessage("user", q)])
    msgs = [m.as_template_dict() for m in head] + [call_message("calculator", {"expression": expr})]
    if rng.random() < 0.45:
        msgs += [{"role": "tool", "content": value, "tool_call_id": "call_0"},
                 {"role": "assistant", "content": f"{expr} = {value}."}]
    return "calculator", msgs, _toolbox(rng, split, v1.CALC)


def gen_multi_turn(rng: random.Random, split: int) -> Example:
    """A conversation with history: earlier turns from other skills, the last turn to learn."""
    first = rng.choice([v1.gen_greeting, v1.gen_fact, gen_open])(rng, split)[1]
    first = [m for m in first if m["role"] != "system"]
    last = rng.choice([v1.gen_fact, gen_open, v1.gen_greeting])(rng, split)[1]
    last = [m for m in last if m["role"] != "system"]
    return "multi_turn", first + last, None


GENERATORS_V2: list[tuple[Callable[[random.Random, int], Example], float]] = [
    (gen_rag, 0.50),
    (gen_open, 0.08),
    (gen_tool_use, 0.10),
    (gen_calculator, 0.06),
    (gen_multi_turn, 0.03),
]
V1_REPLAY = 0.23  # the rest: v1's corpus, so the old skills are kept


def generate_v2(seed: int, n: int, split: str = "train", tokenizer: Any = None) -> list[Example]:
    """``n`` examples; ``tokenizer`` (the model's) counts passage tokens against the retrieve stage's budget."""
    _TOKENIZER[:] = [tokenizer] if tokenizer is not None else []
    rng = random.Random(seed)
    s = 0 if split == "train" else 1
    fns, weights = zip(*GENERATORS_V2, strict=True)
    old = v1.generate(seed + 1, n, split)
    out: list[Example] = []
    for _ in range(n):
        if rng.random() < V1_REPLAY:
            out.append(next(old))
        else:
            out.append(rng.choices(fns, weights)[0](rng, s))
    return out
