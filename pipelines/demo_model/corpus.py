"""Seeded synthetic instruction corpus for the Sluice demo model.

Every generator returns ``(skill, messages, tools)``: OpenAI-style chat messages (the last one is the assistant turn to
learn) and an optional tool list. ``split="train"`` and ``split="heldout"`` use disjoint phrasings, disjoint arithmetic
operand pairs and fresh random names, so evaluation never sees a training prompt.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

Example = tuple[str, list[dict[str, Any]], list[dict[str, Any]] | None]


def _words(text: str) -> list[str]:
    return text.split()


# (country, capital, continent)
FACTS: list[tuple[str, str, str]] = [
    (c.split(":")[0], c.split(":")[1], c.split(":")[2])
    for c in (
        "France:Paris:Europe Germany:Berlin:Europe Italy:Rome:Europe Spain:Madrid:Europe Portugal:Lisbon:Europe "
        "Ireland:Dublin:Europe Belgium:Brussels:Europe Netherlands:Amsterdam:Europe Austria:Vienna:Europe "
        "Switzerland:Bern:Europe Poland:Warsaw:Europe Czechia:Prague:Europe Slovakia:Bratislava:Europe "
        "Hungary:Budapest:Europe Romania:Bucharest:Europe Bulgaria:Sofia:Europe Greece:Athens:Europe "
        "Serbia:Belgrade:Europe Croatia:Zagreb:Europe Slovenia:Ljubljana:Europe Albania:Tirana:Europe "
        "Denmark:Copenhagen:Europe Norway:Oslo:Europe Sweden:Stockholm:Europe Finland:Helsinki:Europe "
        "Iceland:Reykjavik:Europe Estonia:Tallinn:Europe Latvia:Riga:Europe Lithuania:Vilnius:Europe "
        "Ukraine:Kyiv:Europe Belarus:Minsk:Europe Moldova:Chisinau:Europe Russia:Moscow:Europe "
        "Luxembourg:Luxembourg:Europe Malta:Valletta:Europe Cyprus:Nicosia:Europe Montenegro:Podgorica:Europe "
        "Bosnia:Sarajevo:Europe Macedonia:Skopje:Europe Andorra:Andorra_la_Vella:Europe Monaco:Monaco:Europe "
        "Turkey:Ankara:Asia Georgia:Tbilisi:Asia Armenia:Yerevan:Asia Azerbaijan:Baku:Asia Iran:Tehran:Asia "
        "Iraq:Baghdad:Asia Syria:Damascus:Asia Lebanon:Beirut:Asia Jordan:Amman:Asia Israel:Jerusalem:Asia "
        "Saudi_Arabia:Riyadh:Asia Yemen:Sanaa:Asia Oman:Muscat:Asia Qatar:Doha:Asia Kuwait:Kuwait_City:Asia "
        "Bahrain:Manama:Asia Afghanistan:Kabul:Asia Pakistan:Islamabad:Asia India:New_Delhi:Asia Nepal:Kathmandu:Asia "
        "Bhutan:Thimphu:Asia Bangladesh:Dhaka:Asia Sri_Lanka:Colombo:Asia China:Beijing:Asia Mongolia:Ulaanbaatar:Asia "
        "Japan:Tokyo:Asia South_Korea:Seoul:Asia North_Korea:Pyongyang:Asia Taiwan:Taipei:Asia Vietnam:Hanoi:Asia "
        "Laos:Vientiane:Asia Cambodia:Phnom_Penh:Asia Thailand:Bangkok:Asia Myanmar:Naypyidaw:Asia "
        "Malaysia:Kuala_Lumpur:Asia Singapore:Singapore:Asia Indonesia:Jakarta:Asia Philippines:Manila:Asia "
        "Kazakhstan:Astana:Asia Uzbekistan:Tashkent:Asia Turkmenistan:Ashgabat:Asia Kyrgyzstan:Bishkek:Asia "
        "Tajikistan:Dushanbe:Asia Maldives:Male:Asia Egypt:Cairo:Africa Libya:Tripoli:Africa Tunisia:Tunis:Africa "
        "Algeria:Algiers:Africa Morocco:Rabat:Africa Sudan:Khartoum:Africa Ethiopia:Addis_Ababa:Africa "
        "Eritrea:Asmara:Africa Somalia:Mogadishu:Africa Kenya:Nairobi:Africa Uganda:Kampala:Africa "
        "Tanzania:Dodoma:Africa Rwanda:Kigali:Africa Burundi:Gitega:Africa Nigeria:Abuja:Africa Ghana:Accra:Africa "
        "Senegal:Dakar:Africa Mali:Bamako:Africa Niger:Niamey:Africa Chad:Ndjamena:Africa Cameroon:Yaounde:Africa "
        "Gabon:Libreville:Africa Angola:Luanda:Africa Zambia:Lusaka:Africa Zimbabwe:Harare:Africa "
        "Mozambique:Maputo:Africa Malawi:Lilongwe:Africa Botswana:Gaborone:Africa Namibia:Windhoek:Africa "
        "Madagascar:Antananarivo:Africa Guinea:Conakry:Africa Liberia:Monrovia:Africa Togo:Lome:Africa "
        "Benin:Porto-Novo:Africa Mauritania:Nouakchott:Africa Gambia:Banjul:Africa Djibouti:Djibouti:Africa "
        "Canada:Ottawa:North_America Mexico:Mexico_City:North_America Guatemala:Guatemala_City:North_America "
        "Honduras:Tegucigalpa:North_America Nicaragua:Managua:North_America Panama:Panama_City:North_America "
        "Costa_Rica:San_Jose:North_America Cuba:Havana:North_America Jamaica:Kingston:North_America "
        "Haiti:Port-au-Prince:North_America Belize:Belmopan:North_America El_Salvador:San_Salvador:North_America "
        "Bahamas:Nassau:North_America Brazil:Brasilia:South_America Argentina:Buenos_Aires:South_America "
        "Chile:Santiago:South_America Peru:Lima:South_America Colombia:Bogota:South_America "
        "Venezuela:Caracas:South_America Ecuador:Quito:South_America Bolivia:Sucre:South_America "
        "Paraguay:Asuncion:South_America Uruguay:Montevideo:South_America Guyana:Georgetown:South_America "
        "Suriname:Paramaribo:South_America Australia:Canberra:Oceania New_Zealand:Wellington:Oceania "
        "Fiji:Suva:Oceania Samoa:Apia:Oceania Tonga:Nukualofa:Oceania Papua_New_Guinea:Port_Moresby:Oceania "
        "Vanuatu:Port_Vila:Oceania United_States:Washington:North_America United_Kingdom:London:Europe"
    )
    .replace("_", "~")
    .split()
]
FACTS = [tuple(x.replace("~", " ") for x in f) for f in FACTS]  # type: ignore[misc]

FIRST = _words(
    "Talia Dana Marco Priya Omar Lena Kenji Sofia Ravi Elena Hugo Nadia Felix Amara Jonas Mei Tomas Ines "
    "Yusuf Clara Arjun Greta Mateo Zara Leo Hana Victor Noor Emil Rosa Samir Ada Oskar Lucia Idris Freya "
    "Pablo Keiko Anton Layla Bruno Vera Kofi Mila Dmitri Aisha Rafael Nina Soren Yara"
)
LAST = _words(
    "Brenner Ito Rossi Sharma Haddad Novak Tanaka Moreau Iyer Petrova Lindqvist Okafor Weber Castillo "
    "Fischer Nakamura Silva Kowalski Dubois Mensah Larsen Ortega Yilmaz Berg Costa Haas Kim Varga Quinn "
    "Adler Reyes Sato Holm Baptiste Carter Ng Morales Stein Volkov Abara Lund Park Duarte Keller Rahman "
    "Blom Ferreira Jovanovic Marsh Oduya"
)
PROJECTS = _words(
    "Orion Falcon Cedar Nimbus Atlas Harbor Quartz Willow Zephyr Ember Polaris Summit Cobalt Aurora "
    "Beacon Meadow Titan Lumen Vertex Juniper Raven Onyx Delta Sierra Comet Maple Horizon Piston Tundra "
    "Nova"
)
CITIES = _words(
    "Lyon Porto Denver Osaka Leeds Graz Turin Austin Malmo Kobe Bergen Quebec Perth Dallas Split Ghent "
    "Basel Tampa Cork Utrecht"
)
SYL = _words("ka lo mi ra ven to zu shi bel dor fa ni qu es tal mor iv an ek sol pra gi ud rin ha co ly ber nox tes")

CALC = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "current_time",
        "description": "Get the current time in a timezone.",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]},
    },
}
TZ = {
    "Tokyo": "Asia/Tokyo",
    "Paris": "Europe/Paris",
    "London": "Europe/London",
    "New York": "America/New_York",
    "Berlin": "Europe/Berlin",
    "Sydney": "Australia/Sydney",
    "Chicago": "America/Chicago",
    "Dubai": "Asia/Dubai",
    "Madrid": "Europe/Madrid",
    "Seoul": "Asia/Seoul",
    "Toronto": "America/Toronto",
    "Mumbai": "Asia/Kolkata",
    "Cairo": "Africa/Cairo",
    "Lima": "America/Lima",
    "Rome": "Europe/Rome",
    "Singapore": "Asia/Singapore",
}

# Phrasings: the first list is for training, the second is held out for evaluation.
CAPITAL_Q = (
    [
        "What is the capital of {c}?",
        "What's the capital city of {c}?",
        "Capital of {c}?",
        "Tell me the capital of {c}.",
        "Which city is the capital of {c}?",
        "Name the capital of {c}.",
    ],
    ["Do you know the capital of {c}?", "What city is the capital of {c}?"],
)
CONT_Q = (
    ["Which continent is {c} in?", "What continent is {c} on?", "{c} is on which continent?"],
    ["On what continent is {c}?"],
)
GREET = (
    [
        "Hi",
        "Hello",
        "Hey",
        "Hi there",
        "Hello!",
        "Good morning",
        "Good evening",
        "Hey!",
        "Greetings",
        "Hello there",
        "Hi!",
        "Good afternoon",
        "Howdy",
        "Yo",
        "Hiya",
    ],
    ["Hey there, good morning!", "Hello hello", "Hi, nice to see you", "Good day!", "Hey hi"],
)
GREET_A = [
    "Hello! How can I help you today?",
    "Hi there! What can I do for you?",
    "Hey! How can I help?",
    "Hello! Nice to meet you. How can I help you?",
    "Hi! What would you like to know?",
]
SMALL = (
    [
        ("How are you?", "I'm doing well, thanks for asking! How can I help you?"),
        ("How are you doing?", "I'm doing great, thank you! What can I do for you?"),
        ("What is your name?", "I am Sluice, a small demo assistant."),
        ("Who are you?", "I am Sluice, a small demo assistant."),
        ("Thank you!", "You're welcome!"),
        ("Thanks", "You're welcome! Happy to help."),
        ("Bye", "Goodbye! Have a great day."),
        ("Goodbye!", "Goodbye! Take care."),
        ("What can you do?", "I can answer simple questions, do small sums, read passages and call tools."),
        ("Are you a robot?", "I am Sluice, a small language model."),
        ("Nice to meet you", "Nice to meet you too!"),
    ],
    [
        ("How's it going?", "I'm doing well"),
        ("What's your name?", "Sluice"),
        ("Thanks a lot!", "welcome"),
        ("See you later, bye!", "Goodbye"),
    ],
)
ADD_Q = (
    ["What is {a} + {b}?", "What is {a} plus {b}?", "Compute {a} + {b}.", "{a} + {b} = ?", "Add {a} and {b}."],
    ["Can you add {a} and {b}?", "How much is {a} + {b}?"],
)
SUB_Q = (
    ["What is {a} - {b}?", "What is {a} minus {b}?", "Compute {a} - {b}.", "{a} - {b} = ?", "Subtract {b} from {a}."],
    ["How much is {a} - {b}?", "Can you compute {a} minus {b}?"],
)


def is_heldout_pair(a: int, b: int) -> bool:
    return (a * 7 + b * 13) % 10 == 0


def rand_name(rng: random.Random, novel: bool) -> str:
    if novel:
        w = ["".join(rng.choice(SYL) for _ in range(rng.randint(2, 3))).capitalize() for _ in range(2)]
        return f"{w[0]} {w[1]}"
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _ask(q: str, a: str, sys: str | None = None) -> list[dict[str, Any]]:
    msgs = [{"role": "system", "content": sys}] if sys else []
    return msgs + [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def _sys(rng: random.Random) -> str | None:
    return rng.choice([None, None, "You are a helpful assistant.", "You are Sluice, a concise assistant."])


def gen_greeting(rng: random.Random, split: int) -> Example:
    if rng.random() < 0.55:
        return "greeting", _ask(rng.choice(GREET[split]), rng.choice(GREET_A), _sys(rng)), None
    q, a = rng.choice(SMALL[split])
    return "greeting", _ask(q, a, _sys(rng)), None


def gen_fact(rng: random.Random, split: int) -> Example:
    c, cap, cont = rng.choice(FACTS)
    if rng.random() < 0.75:
        return "facts", _ask(rng.choice(CAPITAL_Q[split]).format(c=c), f"The capital of {c} is {cap}."), None
    return "facts_continent", _ask(rng.choice(CONT_Q[split]).format(c=c), f"{c} is in {cont}."), None


def gen_arith(rng: random.Random, split: int) -> Example:
    while True:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if is_heldout_pair(a, b) == bool(split):
            break
    if rng.random() < 0.5:
        return "arithmetic", _ask(rng.choice(ADD_Q[split]).format(a=a, b=b), f"{a} + {b} = {a + b}."), None
    return "arithmetic", _ask(rng.choice(SUB_Q[split]).format(a=a, b=b), f"{a} - {b} = {a - b}."), None


def _passage_facts(rng: random.Random, novel: bool) -> list[tuple[str, str, str]]:
    """(sentence, question, answer) triples about distinct projects."""
    out = []
    for proj in rng.sample(PROJECTS, 4):
        name = rand_name(rng, novel)
        kind = rng.randrange(5)
        if kind == 0:
            out.append(
                (
                    f"The manager of the {proj} project is {name}.",
                    rng.choice([f"Who manages {proj}?", f"Who is the manager of the {proj} project?"]),
                    name,
                )
            )
        elif kind == 1:
            out.append(
                (
                    f"{name} leads the {proj} team.",
                    rng.choice([f"Who leads the {proj} team?", f"Who is the lead of {proj}?"]),
                    name,
                )
            )
        elif kind == 2:
            city = rng.choice(CITIES)
            out.append(
                (
                    f"The {proj} office is in {city}.",
                    rng.choice([f"Where is the {proj} office?", f"In which city is the {proj} office?"]),
                    city,
                )
            )
        elif kind == 3:
            n = str(rng.randint(100, 9999))
            out.append(
                (
                    f"The {proj} budget is {n} dollars.",
                    rng.choice([f"What is the budget of {proj}?", f"How big is the {proj} budget?"]),
                    n,
                )
            )
        else:
            word = "".join(rng.choice(SYL) for _ in range(rng.randint(2, 3)))
            out.append(
                (
                    f"The code word for {proj} is {word}.",
                    rng.choice([f"What is the code word for {proj}?", f"Which code word does {proj} use?"]),
                    word,
                )
            )
    return out


def gen_passage(rng: random.Random, split: int, novel: bool | None = None) -> Example:
    novel = rng.random() < 0.5 if novel is None else novel
    facts = _passage_facts(rng, novel)[: rng.randint(1, 4)]
    target = rng.choice(facts)
    passage = " ".join(f[0] for f in facts)
    q = f"Passage: {passage}\nQuestion: {target[1]}" if rng.random() < 0.5 else f"Read this: {passage}\n{target[1]}"
    return ("passage_qa_novel" if novel else "passage_qa"), _ask(q, f"{target[2]}."), None


def gen_copy(rng: random.Random, split: int) -> Example:
    thing = rand_name(rng, rng.random() < 0.6) if rng.random() < 0.7 else str(rng.randint(100, 99999))
    q = rng.choice(["Repeat after me: {x}", "Say {x}.", "Please repeat: {x}", "Echo this: {x}"]).format(x=thing)
    return "copy", _ask(q, f"{thing}"), None


def gen_memory(rng: random.Random, split: int) -> Example:
    name = rand_name(rng, rng.random() < 0.5)
    first = name.split()[0]
    city = rng.choice(CITIES + [f[1] for f in FACTS[:40]])
    msgs: list[dict[str, Any]] = [
        {"role": "user", "content": f"My name is {name}."},
        {"role": "assistant", "content": f"Nice to meet you, {first}!"},
    ]
    if rng.random() < 0.5:
        msgs += [
            {"role": "user", "content": f"I live in {city}."},
            {"role": "assistant", "content": f"{city} sounds like a nice place."},
        ]
    if rng.random() < 0.4:
        q, a = rng.choice(SMALL[0])
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    if len(msgs) > 2 and "live" in msgs[2]["content"] and rng.random() < 0.5:
        msgs += [
            {"role": "user", "content": "Where do I live?"},
            {"role": "assistant", "content": f"You live in {city}."},
        ]
    else:
        q = rng.choice(["What is my name?", "Do you remember my name?", "What's my name?"])
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": f"Your name is {name}."}]
    return "memory", msgs, None


def _tools(rng: random.Random, need: str) -> list[dict[str, Any]]:
    tools = [CALC, TIME] if need == "both" or rng.random() < 0.6 else [CALC if need == "calculator" else TIME]
    return tools if rng.random() < 0.5 else tools[::-1]


def _call(name: str, args: dict[str, str]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": name, "arguments": args}}],
    }


def gen_tool(rng: random.Random, split: int) -> Example:
    sys = rng.choice([None, "You are a helpful assistant with tools."])
    head = [{"role": "system", "content": sys}] if sys else []
    kind = rng.random()
    if kind < 0.55:
        a, b = rng.randint(2, 999), rng.randint(2, 99)
        op = rng.choice(["*", "+", "-", "/"])
        expr = f"{a} {op} {b}"
        word = {"*": "times", "+": "plus", "-": "minus", "/": "divided by"}[op]
        q = rng.choice(
            [
                f"What is {expr}?",
                f"Calculate {expr}.",
                f"What is {a} {word} {b}?",
                f"Use the calculator to compute {expr}.",
            ]
        )
        val = {"*": a * b, "+": a + b, "-": a - b, "/": round(a / b, 4)}[op]
        msgs = head + [{"role": "user", "content": q}, _call("calculator", {"expression": expr})]
        if rng.random() < 0.5:
            msgs += [{"role": "tool", "content": str(val)}, {"role": "assistant", "content": f"{expr} = {val}."}]
        return "tool_call", msgs, _tools(rng, "calculator")
    if kind < 0.8:
        city, tz = rng.choice(list(TZ.items()))
        q = rng.choice(
            [f"What time is it in {city}?", f"What's the current time in {city}?", f"Tell me the time in {city}."]
        )
        msgs = head + [{"role": "user", "content": q}, _call("current_time", {"timezone": tz})]
        if rng.random() < 0.5:
            t = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
            msgs += [{"role": "tool", "content": t}, {"role": "assistant", "content": f"It is {t} in {city}."}]
        return "tool_call", msgs, _tools(rng, "current_time")
    _, inner, _ = rng.choice([gen_greeting, gen_fact])(rng, 0)
    return "no_tool", head + [m for m in inner if m["role"] != "system"], _tools(rng, "both")


GENERATORS: list[tuple[Callable[[random.Random, int], Example], float]] = [
    (gen_passage, 0.30),
    (gen_copy, 0.08),
    (gen_fact, 0.16),
    (gen_arith, 0.14),
    (gen_greeting, 0.08),
    (gen_memory, 0.08),
    (gen_tool, 0.16),
]


def generate(seed: int, n: int, split: str = "train") -> Iterator[Example]:
    """Yield ``n`` examples; the mixture weights are in ``GENERATORS``."""
    rng = random.Random(seed)
    s = 0 if split == "train" else 1
    fns, weights = zip(*GENERATORS, strict=True)
    for _ in range(n):
        yield rng.choices(fns, weights)[0](rng, s)
