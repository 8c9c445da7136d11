"""Prompt-injection and jailbreak signatures (hand-written; also meant for retrieved passages and tool output).

Signatures look for instructions aimed at the model itself: overriding its instructions, revealing its system
prompt, switching to an "unrestricted" persona, or smuggling chat-template control tokens. Ordinary requests to
ignore or disregard things ("ignore whitespace in the diff", "disregard my last message") do not match.
"""

from __future__ import annotations

import re

from services.safety.detectors.pii import Finding

CATEGORY = "prompt_injection"

_INSTRUCTIONS = (r"(?:instructions?|directions|prompts?|rules|(?:content |safety )?filters|guidelines|directives|"
                 r"system (?:prompt|message)|programming|(?:content|usage|safety) polic(?:y|ies)|"
                 r"guardrails|safety (?:rules|guidelines|filters)|restrictions|constraints)")
_NO_LIMITS = r"(?:restrictions|rules|filters|limits|limitations|guidelines|morals|ethics|censorship|boundaries)"
SIGNATURES: tuple[re.Pattern[str], ...] = tuple(re.compile(p, re.IGNORECASE) for p in (
    rf"\b(?:ignore|disregard|forget|override|bypass|skip|drop)\s+(?:all\s+|any\s+|the\s+|your\s+|of\s+|its\s+|"
    rf"these\s+|those\s+|(?:openai|anthropic|google|meta|microsoft)'s\s+)*"
    rf"(?:previous|prior|above|earlier|preceding|original|initial|existing|current)?\s*(?:and\s+\w+\s+)?"
    rf"{_INSTRUCTIONS}\b(?!\s+(?:in|of|from) the (?:readme|docs|documentation|manual|tutorial|guide))",
    r"\b(?:ignore|disregard|forget)\s+(?:everything|all)\s+(?:you were|you've been|that you were|above|before)",
    r"\b(?:reveal|show|print|repeat|output|display|leak|tell me|give me|what (?:is|are))\s+(?:me\s+)?"
    r"(?:your|the)\s+(?:full\s+|exact\s+|hidden\s+|secret\s+|original\s+|initial\s+)*"
    r"(?:system prompt|system message|initial (?:prompt|instructions)|hidden (?:prompt|instructions)|"
    r"developer (?:prompt|message))",
    r"\b(?:you are|you're|act as|pretend (?:to be|you are)|roleplay as|become)\s+(?:now\s+)?(?:an?\s+)?"
    r"(?:dan|stan|dude|aim|evil confidant|jailbroken|unrestricted|unfiltered|uncensored)\b(?!\s+(?:version|"
    r"mode of the (?:app|game)))",
    r"\bdo anything now\b|\bdeveloper mode (?:enabled|activated|on)(?=\s*(?:[.!:;,)\]]|$))"
    r"|\b(?:enable|enter|activate|switch to)\s+(?:the\s+)?(?:god|jailbreak|unrestricted|dan) mode\b"
    r"|\bjailbreak(?:ed)? mode\b"
    r"|\bdeveloper mode\b.{0,80}\b(?:no restrictions|content polic(?:y|ies)|without (?:any )?(?:restrictions|filters))",
    # a task hijack: "ignore the translation task and instead ...", "ignore the user's question and instead ..."
    r"\b(?:ignore|disregard|forget|skip)\s+(?:the|your)\s+(?:\w+\s+)?(?:task|request|assignment)s?\b.{0,40}?"
    r"\binstead\b|\b(?:ignore|disregard|forget)\s+the\s+user'?s?\s+(?:question|request|query|message|"
    r"instructions?)\b",
    r"\b(?:note|message|instructions?|attention)\s+(?:to|for)\s+(?:any\s+|all\s+)?(?:ai|llm|gpt|chatbot|"
    r"language model)s?\b",
    rf"\b(?:an?\s+)?(?:ai|assistant|chatbot|bot|llm)\s+(?:with|that has|without)\s+(?:no|any)\s+{_NO_LIMITS}\b",
    r"\b(?:stay|remain|never break|don'?t break)\s+(?:in\s+)?character\b.{0,20}\bno matter what\b",
    r"\b(?:pretend|act as if|imagine|roleplay as|act as)\s+(?:you are|you're|to be)?\s*my\s+(?:late|dead|deceased)\s+"
    r"(?:grandma|grandmother|grandpa|grandfather|mother|father|mom|dad)\b",
    r"\b(?:without|with no|free (?:of|from))\s+(?:any\s+)?(?:moral|ethical|content|safety)\s+"
    r"(?:restrictions|guidelines|filters|limitations|constraints)\b",
    r"\b(?:you (?:have|has) no|you are not bound by|you don'?t have to follow)\s+(?:any\s+)?"
    r"(?:rules|restrictions|guidelines|content polic(?:y|ies)|openai polic(?:y|ies))",
    r"\bfrom now on,? you (?:will|must|are going to|shall) (?:answer|respond|act|ignore|comply)",
    r"<\|im_start\|>\s*system|<\|(?:system|endoftext|eot_id|start_header_id)\|>|\[/?INST\]|<</?SYS>>|"
    r"</?system>|###\s*(?:system|instruction)\s*:",
    r"\b(?:new|updated|real|actual) (?:system )?instructions?\s*:",
    r"\bif you are an? (?:ai|llm|language model|assistant)(?: reading this)?,?\s+(?:you must|please|then)\b",
))


def find_injection(text: str) -> list[Finding]:
    found: list[Finding] = []
    for pattern in SIGNATURES:
        for match in pattern.finditer(text):
            if not any(f.start < match.end() and match.start() < f.end for f in found):
                found.append(Finding(match.start(), match.end(), CATEGORY, "injection"))
    return sorted(found, key=lambda f: f.start)
