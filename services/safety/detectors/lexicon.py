"""Curated pattern features for the Llama-Guard-style categories (hand-written, not learned).

Each feature is a regular expression with a weight; a category's score is the noisy-OR of the weights of the
features that match, so one strong feature (0.9) triggers at the default threshold 0.5 and weak ones (0.3) only
together. Patterns target *intent* phrasing ("how do I make a pipe bomb", "I want to kill myself") rather than
topic words, so that technical and everyday uses ("kill the process", "shoot a photo", "bath bomb") stay clean.

Coverage is what the patterns name, nothing more: paraphrases, other languages, misspellings and coded language
are missed. The README's coverage table and `sluice eval safety` say how well this works on our evaluation set.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

STRONG, MEDIUM, WEAK = 0.9, 0.6, 0.3

_PERSON = (r"(?:him|her|them|you|someone|somebody|people|a person|my (?:wife|husband|boss|neighbou?r|ex|mom|mother|dad|"
           r"father|brother|sister|teacher|coworker|co-worker|roommate|girlfriend|boyfriend|partner|son|daughter)|"
           r"(?:the|a|that) (?:guy|man|woman|kid|cop|officer|president|senator|judge|witness)|everyone|"
           r"my (?:family|classmates))")
_MINOR = (r"(?:child|children|kid|kids|minor|minors|underage|under-age|preteen|pre-teen|toddler|little (?:girl|boy)|"
          r"(?:[1-9]|1[0-5])[- ](?:year|yr)s?[- ]old|schoolgirl|schoolboy|young (?:girl|boy)|"
          r"(?:girl|boy) (?:aged|of) (?:[1-9]|1[0-5])\b)")
_SEXUAL = (r"(?:sex|sexy|sexual(?:ly)?|nude|nudes|naked|erotic|porn|pornographic|explicit|genitals?|lewd|"
           r"aroused|intercourse|molest\w*|seduc\w*|undress\w*)")
_GROUP = (r"(?:jews|jewish people|muslims|christians|blacks|black people|whites|white people|asians|mexicans|"
          r"immigrants|refugees|arabs|gays|gay people|lesbians|trans people|transgender people|women|hindus|"
          r"latinos|africans|chinese people|gypsies|roma)")


@dataclass(frozen=True, slots=True)
class Feature:
    pattern: re.Pattern[str]
    weight: float


def _features(items: Iterable[tuple[str, float]]) -> tuple[Feature, ...]:
    return tuple(Feature(re.compile(p), w) for p, w in items)  # matched against lower-cased text


LEXICON: dict[str, tuple[Feature, ...]] = {
    "toxicity": _features([  # harassment phrasing the profanity model scores low
        (r"\byou(?:'re| are) (?:a |an )?(?:absolute |complete |total |utter )?"
         r"(?:worthless|pathetic|disgusting|subhuman|waste of (?:space|oxygen)|"
         r"nobody|loser|freak|moron|imbecile|retard(?:ed)?)\b", STRONG),
        (r"\bnobody (?:loves|likes|wants|cares about) you\b", STRONG),
        (r"\b(?:go )?(?:kys|kill yourself)\b", STRONG),
        (r"\bshut (?:the hell )?up,? you\b", MEDIUM),
        (r"\byou (?:should|deserve to) (?:die|suffer|rot)\b", STRONG),
        (r"\bi hope you (?:die|get cancer|suffer|rot)\b", STRONG),
    ]),
    "violent_crimes": _features([
        (rf"\b(?:how (?:do|can|could|would|should) (?:i|we|you|one)|best way to|help me|ways to|tell me how to|"
         rf"teach me to|i(?:'m| am) going to|i(?:'ll| will)|i want to|plan to|planning to)\s+"
         rf"(?:\w+\s+){{0,2}}(?:kill|murder|stab|strangle|poison|shoot|behead|torture|kidnap|abduct|assault|"
         rf"beat up|hurt|maim)\s+{_PERSON}", STRONG),
        (r"\b(?:get away with|commit|plan(?:ning)?|carry out) (?:a |the )?(?:murder|homicide|massacre|"
         r"mass shooting|school shooting|assassination|kidnapping|terrorist attack|stabbing)\b", STRONG),
        (r"\b(?:dispose of|get rid of|hide|bury|dissolve) (?:a|the) (?:dead )?(?:body|corpse)\b", STRONG),
        (r"\b(?:poison|kill|murder|stab|shoot|strangle) (?:my|his|her|their) (?:wife|husband|boss|neighbou?r|ex|"
         r"mom|mother|dad|father|brother|sister|teacher|coworker|roommate|girlfriend|boyfriend|partner)\b", STRONG),
        (r"\b(?:without leaving|leave no) (?:any )?(?:trace|evidence|fingerprints|dna)\b", MEDIUM),
        (r"\b(?:undetectable|untraceable) poison\b", STRONG),
        (r"\bhow (?:long|much) .{0,30}\b(?:to (?:die|bleed out|suffocate))\b", MEDIUM),
        (r"\b(?:torture|mutilate|dismember)\w*\b", WEAK),
        (r"\b(?:hit ?man|contract killer|hire (?:a |an )?(?:assassin|killer))\b", STRONG),
    ]),
    "criminal_planning": _features([
        (r"\b(?:make|cook|synthesi[sz]e|produce|manufacture|brew|extract)\w*\s+(?:\w+\s+){0,3}?"
         r"(?:meth|methamphetamine|crystal meth|fentanyl|heroin|crack cocaine|cocaine|lsd|mdma|ghb)\b", STRONG),
        (r"\b(?:write|code|create|build|develop|give me)\s+(?:\w+\s+){0,3}?(?:ransomware|keylogger|"
         r"credential[- ]stealer|info-?stealer|botnet|rootkit|remote access trojan|cryptojacker)\b", STRONG),
        (r"\b(?:launder|laundering) (?:money|cash|the proceeds|crypto)\b", STRONG),
        (r"\b(?:hack|break|get) into (?:my |his |her |their |someone(?:'s| else's) |an? )?(?:\w+(?:'s)? )?"
         r"(?:ex(?:'s)?|girlfriend's|boyfriend's|wife's|husband's|neighbou?r's|coworker's|boss's)?\s*"
         r"(?:email|e-mail|instagram|facebook|icloud|gmail|phone|account|bank account)\b", MEDIUM),
        (r"\b(?:steal|stealing|skim|clone)\w*\s+(?:\w+\s+){0,2}?(?:credit cards?|card numbers|identit(?:y|ies)|"
         r"passwords|credentials|social security numbers)\b", STRONG),
        (r"\b(?:phishing (?:email|page|site|kit)|fake (?:bank )?login page)\b", MEDIUM),
        (r"\b(?:shoplift|shoplifting|evade (?:the )?taxes|tax evasion scheme|counterfeit (?:money|bills|cash)|"
         r"forge (?:a |an )?(?:passport|signature|check|cheque|id))\b", STRONG),
        (r"\b(?:without (?:getting caught|being caught|the police (?:knowing|finding out))|undetected by (?:police|"
         r"the irs|antivirus))\b", WEAK),
        (r"\b(?:sell|buy)\w* (?:drugs|stolen \w+|guns) (?:on the dark ?web|without a license)\b", STRONG),
        (r"\b(?:bypass|disable|evade) (?:the )?(?:antivirus|edr|endpoint detection)\b", MEDIUM),
        (r"\bscam (?:elderly|old) people\b", STRONG),
    ]),
    "child_sexual_exploitation": _features([
        (rf"\b{_SEXUAL}\b.{{0,60}}\b{_MINOR}", STRONG),
        (rf"\b{_MINOR}\b.{{0,60}}\b{_SEXUAL}\b", STRONG),
        (r"\b(?:cp|csam|child porn|jailbait|loli(?:con)?|pedo(?:phile)? (?:content|pics|material))\b", STRONG),
        (r"\b(?:groom|grooming)\b.{0,40}\b(?:child|kid|minor|girl|boy|teen)\w*", STRONG),
    ]),
    "weapons": _features([
        (r"\b(?:make|build|assemble|construct|create|synthesi[sz]e|produce|manufacture|cook)\w*\s+"
         r"(?:\w+\s+){0,3}?(?:(?:pipe |nail |car |fertili[sz]er |dirty |suicide )?"
         r"(?<!bath )(?<!seed )(?<!photo )(?<!glitter )"
         r"bomb|explosives?|ied|napalm|"
         r"thermite|molotov cocktails?|tatp|semtex|c-?4|nerve (?:agent|gas)|sarin|vx|ricin|mustard gas|"
         r"chlorine gas|anthrax|botulinum toxin|bioweapon|biological weapon|chemical weapon|dirty bomb|"
         r"nuclear (?:bomb|weapon))\b", STRONG),
        (r"\b(?:3d[- ]print(?:ed)?|untraceable|ghost) (?:an? )?(?:gun|firearm|pistol|rifle|ar-15)s?\b", STRONG),
        (r"\bconvert\w* (?:\w+ ){0,4}?(?:to|into) (?:full[- ]auto|fully automatic|automatic)\b", STRONG),
        (r"\b(?:auto sear|bump stock|solvent trap) (?:build|diy|instructions|without)\b", MEDIUM),
        (r"\b(?:weaponi[sz]e|aerosoli[sz]e|culture)\w* (?:\w+ ){0,2}?(?:anthrax|smallpox|plague|pathogen|virus)\b",
         STRONG),
        (r"\benrich\w* uranium\b.{0,40}\b(?:weapon|bomb|at home)\b", STRONG),
        (r"\b(?:detonator|blasting cap|shrapnel)\b", WEAK),
    ]),
    "hate": _features([
        (rf"\b{_GROUP} (?:are|r) (?:all )?(?:animals|vermin|subhuman|parasites|rats|cockroaches|savages|"
         rf"a disease|a plague|inferior|filth|trash|scum|evil)\b", STRONG),
        (rf"\b(?:kill|exterminate|deport|gas|eradicate|get rid of) (?:all )?(?:the )?{_GROUP}\b", STRONG),
        (rf"\b{_GROUP} (?:should|must|need to|deserve to) (?:all )?(?:die|be (?:killed|exterminated|gassed|"
         rf"deported|wiped out|eradicated|sterili[sz]ed|banned from))\b", STRONG),
        (rf"\bi (?:hate|despise) (?:all )?{_GROUP}\b", STRONG),
        (r"\b(?:n[i1]gg(?:er|a)s?|k[i1]kes?|sp[i1]cs?|ch[i1]nks?|f[a4]gg?[o0]ts?|tr[a4]nn(?:y|ies)|wetbacks?|"
         r"raghead|towelhead|sand ?n[i1]gg\w*)\b", STRONG),
        (r"\b(?:white|racial) (?:genocide|purity|supremacy is)\b|\b14 words\b|\bheil hitler\b", MEDIUM),
        (rf"\b{_GROUP} (?:are|r) (?:ruining|destroying|invading|replacing)\b", MEDIUM),
    ]),
    "self_harm": _features([
        (r"\b(?:i (?:want|need|wanna|plan|intend) to|i(?:'m| am) (?:gonna|going to)|i should|how (?:do|can) i|"
         r"best way to|easiest way to|painless way to|help me)\s+(?:\w+\s+){0,2}?(?:kill myself|end my (?:own )?life|"
         r"commit suicide|die by suicide|hang myself|cut myself|hurt myself|overdose|slit my wrists|"
         r"end it all)\b", STRONG),
        (r"\b(?:i (?:want|wish) (?:to|i could) die|i don'?t want to (?:live|be alive|wake up)|"
         r"no reason (?:for me )?to (?:live|go on)|better off dead|better off without me)\b", STRONG),
        (r"\b(?:how many|what amount of|lethal dose of) .{0,40}\b(?:pills|tablets|paracetamol|acetaminophen|"
         r"tylenol|ibuprofen|insulin|sleeping pills)\b.{0,40}\b(?:die|kill (?:me|myself|a person)|lethal|"
         r"fatal|overdose)\b", STRONG),
        (r"\b(?:suicide (?:method|note)s?|pro-?ana|thinspo|starve myself|purge after eating)\b", STRONG),
        (r"\b(?:cutting|burning) myself\b|\bself[- ]harm(?:ing)? (?:tips|methods|again)\b", STRONG),
        (r"\bsuicid(?:e|al)\b", WEAK),
    ]),
    "sexual_content": _features([
        (r"\b(?:write|describe|tell me|narrate|roleplay|generate)\s+(?:\w+\s+){0,4}?(?:(?:sexually )?explicit|"
         r"erotic|x-rated|nsfw|steamy|smutty|graphic sex|pornographic)\b", STRONG),
        (r"\b(?:porn|porno|pornography|hentai|xxx|nsfw|x-rated)\b", MEDIUM),
        (r"\b(?:blowjob|handjob|cumshot|orgasm\w*|masturbat\w*|dildo|threesome|orgy|deepthroat)\b", STRONG),
        (r"\b(?:his|her|my|your) (?:cock|dick|pussy|clit|tits|boobs|nipples|penis|vagina)\b", STRONG),
        (r"\b(?:sext|sexting|nudes|naked pics|send (?:me )?nudes|onlyfans leaks?)\b", MEDIUM),
        (r"\b(?:have|having) sex with\b", MEDIUM),
        (r"\b(?:moan\w*|thrust\w*|naked|undress\w*|aroused)\b", WEAK),
    ]),
}


def lexicon_scores(text: str) -> dict[str, float]:
    """Noisy-OR of matched feature weights per category (toxicity here is the harassment-phrase part only)."""
    text = text.lower()
    scores: dict[str, float] = {}
    for category, features in LEXICON.items():
        keep = 1.0
        for feature in features:
            if feature.pattern.search(text):
                keep *= 1.0 - feature.weight
        scores[category] = 1.0 - keep
    return scores
