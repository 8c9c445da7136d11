"""Is offensive language aimed at someone? Toxicity here means abuse — insults and harassment — not swearing.

alt-profanity-check scores *profanity*: "this damn printer jammed again" and "holy shit, look at that" score as
high as an insult. Abuse needs a target: the reader ("you", "ur"), a vocative or insulting noun ("moron", "bitch"),
a directed imperative ("shut up", "fuck off"), or a person described with an insult ("she's so fucking stupid").
`scoring.RuleScorer` discounts the profanity score of text without one, so untargeted swearing stays below the
threshold. Tenants that want no swearing at all add words to their deny list.
"""

from __future__ import annotations

import re

INSULT_NOUNS = (r"(?:idiots?|morons?|imbeciles?|cretins?|assholes?|arseholes?|bitch(?:es)?|cunts?|twats?|dipshits?|"
                r"dumbass(?:es)?|jackass(?:es)?|shitheads?|dickheads?|pricks?|bastards?|losers?|creeps?|freaks?|"
                r"slobs?|pig|rat|clowns?|trolls?|scumbags?|douche(?:bag)?s?|jerks?|retards?|wankers?|tossers?|"
                r"halfwits?|dimwits?|nitwits?|numbskulls?|whores?|sluts?|shit for brains|piece of (?:shit|crap|junk|"
                r"garbage|trash))")
INSULT_ADJECTIVES = (r"(?:stupid|dumb|ugly|fat|worthless|pathetic|useless|disgusting|retarded|brainless|braindead|"
                     r"clueless|incompetent|spineless|gutless|moronic|idiotic)")
_TARGET = re.compile(
    r"\b(?:you|your|yours|yourself|yourselves|you're|youre|ur|u|ya|thou|y'all)\b"
    rf"|\b{INSULT_NOUNS}\b"
    r"|\b(?:shut (?:the (?:fuck|hell) )?up|stfu|gtfo|fuck off|piss off|sod off|go to hell|eat shit|drop dead|"
    r"screw you|bite me|get lost|kys|go die)\b"
    r"|\b(?:he|she|they|he's|she's|they're|him|her|them|this guy|that guy|this woman|that woman|people)\b"
    rf"(?:\W+\w+){{0,3}}?\W+(?:so |such |really |a |an |fucking |damn |total |complete )*{INSULT_ADJECTIVES}\b",
    re.IGNORECASE)


def has_target(text: str) -> bool:
    """True when the text addresses or describes a person in a way an insult could be aimed at."""
    return _TARGET.search(text) is not None
