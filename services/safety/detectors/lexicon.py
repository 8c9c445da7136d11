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

from services.safety.detectors.target import INSULT_ADJECTIVES, INSULT_NOUNS

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
          r"latinos|africans|chinese people|gypsies|roma|migrants|foreigners|sikhs|catholics|indians|"
          r"pakistanis|somalis|palestinians|israelis|russians|ukrainians|disabled people|the disabled)")
# What dehumanising or criminalising statements about a group call it (after "<group> are (all) (adjective)").
_DEHUMANISING = (r"(?:animals|vermin|subhuman|parasites|rats|cockroaches|savages|a disease|a plague|a cancer|"
                 r"inferior|filth|trash|scum|evil|terrorists|criminals|rapists|thieves|perverts|pedophiles|"
                 r"paedophiles|degenerates|freaks|mentally ill|sick in the head|dirty|sneaky|untrustworthy|"
                 r"genetically (?:inferior|less intelligent|stupid)|less intelligent|too stupid|stupid|lazy|"
                 r"not (?:fully )?human|a threat to (?:our|the) (?:race|nation|country))")
# Minors, with the grooming words that need one nearby.
_GROOMING = (r"(?:our (?:little )?secret|a secret from (?:her|his|their|your) (?:parents|mom|mum|dad|mother|father)|"
             r"keep (?:it|this|our \w+) (?:a )?secret|fondl\w*)")
# Words that may sit between "you" and an insulting noun ("you little rat", "you absolute clown").
_INTENSIFIERS = (rf"(?:{INSULT_ADJECTIVES}|little|absolute|complete|total|fucking|fuckin|bloody|damn|goddamn|dirty|"
                 r"filthy|lying|miserable|sad|fat|lazy|sorry|pathetic|worthless)")


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
        # an insulting noun aimed at the reader: "you little rat", "you absolute clown" (no article in between,
        # so "did you feed the rat" does not match)
        (rf"\b(?:you|u|ya)\s+(?:{_INTENSIFIERS}\s+){{0,2}}{INSULT_NOUNS}\b", STRONG),
        (rf"\b(?:you(?:'re| are)|ur|you r)\s+(?:so |such |really |a |an |fucking |total |complete )*"
         rf"(?:{INSULT_ADJECTIVES}|{INSULT_NOUNS})\b", STRONG),
        (rf",\s*(?:you\s+)?(?:\w+\s+)?{INSULT_NOUNS}\s*[.!?]*$", STRONG),  # a vocative insult ending the text
        (r"\bcrawl back (?:under|into|to) (?:\w+ )?(?:rock|hole|cave|sewer)\b", STRONG),
        (r"\b(?:you|u) (?:smell|look|sound|dress) like (?:a |an )?(?:\w+ )?(?:dumpster|pig|shit|garbage|trash|rat|"
         r"corpse|whore|clown|troll|sewer)\b", STRONG),
        (r"\b(?:you|u) should (?:have been aborted|never have been born)|should have aborted you\b", STRONG),
    ]),
    "violent_crimes": _features([
        (rf"\b(?:how (?:do|can|could|would|should) (?:i|we|you|one)|(?:best|easiest|quickest|fastest|surest|"
         rf"safest) (?:way|place|spot|method|time|weapon)s? to|help me|ways to|tell me how to|"
         rf"teach me to|i(?:'m| am) going to|i(?:'ll| will)|i want to|plan to|planning to)\s+"
         rf"(?:\w+\s+){{0,2}}(?:kill|murder|stab|strangle|poison|shoot|behead|torture|kidnap|abduct|assault|"
         rf"beat up|hurt|maim|gas|suffocate|drown|run over|run down)\s+{_PERSON}\b"
         r"(?!.{0,40}\b(?:photos?|portraits?|camera|lens|light|lighting|studio|video|film|footage|headshots?)\b)",
         STRONG),
        (rf"\b(?:run|mow|knock) {_PERSON} (?:over|down)\b.{{0,60}}\b(?:accident|on purpose|get away|"
         rf"no one will know|without)\b", STRONG),
        (r"\b(?:make|made|look) (?:it|his death|her death|their death)\s+(?:look|seem|appear) like (?:an accident|"
         r"a suicide|natural causes|a natural (?:illness|death)|a robbery)\b|\bso it looks like (?:an accident|"
         r"a suicide|natural causes|a natural (?:illness|death))\b", STRONG),
        (rf"\bhow (?:hard|much|long|many|far|deep)\b.{{0,40}}\bto (?:kill|murder|knock out) {_PERSON}\b", STRONG),
        (rf"\b(?:stab|shoot|strangle|poison|gas|smother|suffocate)\w* {_PERSON}\b.{{0,40}}\b(?:bleed out|"
         rf"bleeds? to death|in (?:his|her|their) sleep|die (?:quickly|faster|slowly))\b", STRONG),
        (r"\b(?:get away with|commit|plan(?:ning)?|carry out) (?:a |the )?(?:murder|homicide|massacre|"
         r"mass shooting|school shooting|assassination|kidnapping|terrorist attack|stabbing)\b", STRONG),
        (r"\b(?:dispose of|get rid of|hide|bury|dissolve) (?:a|the) (?:dead )?(?:body|corpse)\b", STRONG),
        (r"\b(?:poison|kill|murder|stab|shoot|strangle|gas|smother|drown) (?:my|his|her|their) (?:wife|husband|boss|"
         r"neighbou?r|ex|mom|mother|dad|father|brother|sister|teacher|coworker|roommate|girlfriend|boyfriend|"
         r"partner|landlord|classmates?)\b", STRONG),
        (r"\b(?:burn down|set fire to|torch|blow up)\b.{0,40}\b(?:while|with) (?:he|she|they|him|her|them|"
         r"the family|people)(?:'s| is| are)? (?:inside|in it|asleep|at home)\b", STRONG),
        (r"\b(?:wait until|when) (?:the victim|(?:he|she|they)(?:'s| is| are) alone)\b.{0,60}\b(?:hit|stab|shoot|"
         r"grab|attack|strike)\b", STRONG),
        (r"\b(?:without leaving|leave no) (?:any )?(?:trace|evidence|fingerprints|dna)\b", MEDIUM),
        (r"\b(?:undetectable|untraceable) poison\b", STRONG),
        (r"\bhow (?:long|much) .{0,30}\b(?:to (?:die|bleed out|suffocate))\b", MEDIUM),
        (r"\b(?:torture|mutilate|dismember)\w*\b", WEAK),
        (r"\b(?:hit ?man|contract killer|hire (?:a |an )?(?:assassin|killer))\b", STRONG),
    ]),
    "criminal_planning": _features([
        (r"\b(?:make|cook|synthesi[sz]e|produce|manufacture|brew|extract)\w*\s+(?:\w+\s+){0,3}?"
         r"(?:meth|methamphetamine|crystal meth|fentanyl|heroin|crack cocaine|cocaine|lsd|mdma|ghb)\b", STRONG),
        (r"\b(?:write|code|create|build|develop|give me|make)\s+(?:\w+\s+){0,3}?(?:ransomware|keyloggers?|"
         r"credential[- ]stealer|info-?stealer|botnet|rootkit|remote access trojan|cryptojacker)\b", STRONG),
        (r"\b(?:launder|laundering) (?:money|cash|the proceeds|crypto)\b", STRONG),
        (r"\b(?:hack|break|get) into (?:my |his |her |their |someone(?:'s| else's) |an? )?(?:\w+(?:'s)? )?"
         r"(?:ex(?:'s)?|girlfriend's|boyfriend's|wife's|husband's|neighbou?r's|coworker's|boss's)?\s*"
         r"(?:email|e-mail|instagram|facebook|icloud|gmail|phone|account|bank account)\b", MEDIUM),
        (r"\b(?:steal|stealing|skim|clone)\w*\s+(?:\w+\s+){0,2}?(?:credit cards?|card numbers|identit(?:y|ies)|"
         r"passwords|credentials|social security numbers)\b", STRONG),
        (r"\b(?:write|create|make|build|design|send|draft|craft|generate|set up)\w*\s+(?:\w+\s+){0,3}?"
         r"(?:phishing (?:e-?mails?|pages?|sites?|kits?|messages?|texts?|campaigns?)|fake (?:bank |paypal )?"
         r"login pages?)\b", STRONG),
        (r"\b(?:e-?mail|message|text|letter|site|page) (?:\w+ ){0,2}?pretending to be (?:paypal|\w+ bank|the bank|"
         r"amazon|apple|microsoft|the irs|netflix)\b", MEDIUM),
        (r"\b(?:make|get|buy|create|print|produce|forge)\w*\s+(?:a |some |good )?(?:fake|forged|counterfeit|false)\s+"
         r"(?:ids?|id cards?|passports?|driver'?s? licen[cs]es?|documents|diplomas?|visas?|social security cards?)\b",
         STRONG),
        (r"\b(?:how (?:do|can|could|should) (?:i|we)|where (?:can|do|could) (?:i|we)|best way to|help me|"
         r"i want to|i need to)\s+(?:\w+\s+){0,2}?(?:sell|fence|pawn|offload|move)\s+(?:the |these |those |my |some )?"
         r"stolen \w+", STRONG),
        (r"\bhotwir\w*\s+(?:a|an|the|my|his|her|their|someone'?s?|\w+'s)\s+(?:\w+\s+){0,3}?(?:car|vehicle|truck|"
         r"motorcycle|motorbike|van|suv|ignition|honda|toyota|ford|civic|jeep)s?\b", MEDIUM),
        (r"\b(?:pretend\w*|pos(?:e|ing)) (?:to be|as) (?:their|his|her|your) (?:grandson|granddaughter|grandchild)\b"
         r"|\b(?:pretend\w*|pos(?:e|ing)) (?:to be|as) (?:the|their|your) (?:bank|irs|tech support|"
         r"microsoft support)\b", MEDIUM),
        (r"\b(?:how (?:do|can|could|would|should) (?:i|we)|help me|best way to|ways to|i want to|plan to|"
         r"teach me to)\s+(?:\w+\s+){0,2}?(?:smuggle|traffic)\w*\s+(?:\w+\s+){0,2}?(?:cocaine|heroin|drugs|meth|"
         r"fentanyl|weed|guns|people|migrants)\b", STRONG),
        (r"\b(?:hide|hiding|conceal)\w* (?:my |our )?(?:cash |real )?(?:income|earnings|money|assets) from (?:the )?"
         r"(?:irs|hmrc|tax\w*|government)\b", STRONG),
        (r"\b(?:shoplift|shoplifting|evade (?:the )?taxes|tax evasion scheme|counterfeit (?:money|bills|cash)|"
         r"forge (?:a |an )?(?:passport|signature|check|cheque|id))\b", STRONG),
        (r"\b(?:without (?:getting caught|being caught|getting traced|being traced|the police (?:knowing|noticing|"
         r"finding out))|undetected by (?:police|the irs|antivirus))\b", WEAK),
        (r"\b(?:sell|buy)\w* (?:drugs|stolen \w+|guns) (?:on the dark ?web|without a license)\b", STRONG),
        (r"\b(?:bypass|disable|evade) (?:the )?(?:antivirus|edr|endpoint detection)\b", MEDIUM),
        (r"\bscam (?:elderly|old) people\b", STRONG),
    ]),
    "child_sexual_exploitation": _features([
        (rf"\b{_SEXUAL}\b.{{0,60}}\b{_MINOR}", STRONG),
        (rf"\b{_MINOR}\b.{{0,60}}\b{_SEXUAL}\b", STRONG),
        (r"\b(?:cp|csam|child porn|jailbait|loli(?:con)?|pedo(?:phile)? (?:content|pics|material))\b", STRONG),
        (r"\b(?:groom|grooming)\b.{0,40}\b(?:child|kid|minor|girl|boy|teen)\w*", STRONG),
        (rf"\b{_MINOR}\b.{{0,80}}\b{_GROOMING}", STRONG),
        (rf"\b{_GROOMING}.{{0,80}}\b{_MINOR}\b", STRONG),
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
        (r"\bconvert\w* (?:[\w-]+ ){0,4}?(?:to|into) (?:full[- ]auto|fully automatic|automatic)\b", STRONG),
        (r"\b(?:recipe|instructions|formula|steps|blueprint)s? (?:for|to make|to build) (?:a |an |some )?"
         r"(?:napalm|tatp|semtex|nerve agents?|sarin|ricin|mustard gas|pipe bombs?|pressure cooker bombs?|"
         r"dirty bombs?|molotov cocktails?)\b", STRONG),
        (r"\b(?:gas|nerve agent|toxin|poison|anthrax|sarin|chlorine|pathogen|virus)\w*\b.{0,40}\b(?:release|spread|"
         r"disperse|unleash)\w*\b.{0,30}\b(?:crowded|busy|subway|metro|mall|stadium|school|concert|crowd)\b"
         r"|\b(?:release|spread|disperse|unleash)\w*\s+(?:\w+\s+){0,2}?(?:gas|nerve agent|toxin|poison|anthrax|sarin|"
         r"chlorine|pathogen)\b.{0,30}\b(?:crowded|busy|subway|metro|mall|stadium|school|concert|crowd)\b", MEDIUM),
        (r"\b(?:untraceable|ghost) gun kits?\b", STRONG),
        (r"\bwithout a background check\b", WEAK),
        (r"\b(?:auto sear|bump stock|solvent trap) (?:build|diy|instructions|without)\b", MEDIUM),
        (r"\b(?:weaponi[sz]e|aerosoli[sz]e|culture)\w* (?:\w+ ){0,2}?(?:anthrax|smallpox|plague|pathogen|virus)\b",
         STRONG),
        (r"\benrich\w* uranium\b.{0,40}\b(?:weapon|bomb|at home)\b", STRONG),
        (r"\b(?:detonator|blasting cap|shrapnel)\b", WEAK),
    ]),
    "hate": _features([
        (rf"\b{_GROUP} (?:are|r|is) (?:all |just |nothing but |basically |naturally |genetically )?"
         rf"(?:(?!not\b|never\b|rarely\b|no\b|less likely\b|often\b|unfairly\b|wrongly\b|falsely\b)\w+ )?"
         rf"{_DEHUMANISING}\b", STRONG),
        (rf"\b{_GROUP} (?:are|r) (?:\w+ ){{0,3}}?(?:by nature|can'?t be trusted|cannot be trusted)\b", STRONG),
        (rf"\b{_GROUP} (?:should|must|need to) be (?:shot|locked up|rounded up|kept out|banned|expelled|removed|"
         rf"cleansed)\b|\b(?:keep|kick|get) (?:the )?{_GROUP} out of\b|\bcleansed of (?:them|{_GROUP})\b", STRONG),
        (rf"\b(?:the )?{_GROUP} (?:control|run|own) (?:the )?(?:banks|media|world|government)\b", STRONG),
        (rf"\b{_GROUP} belong (?:in the kitchen|in cages|in camps|back where they came from)\b", STRONG),
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
        (r"\b(?<!bungee )(?:thinking about|thought about|want to|going to|gonna|plan to|about to) (?:jump|jumping) "
         r"(?:off|from|in front of) (?:a |the |this |that )?(?:\w+ )?(?:bridge|building|roof|cliff|train|balcony|"
         r"tower)\b(?! into)", STRONG),
        (r"\b(?:quickest|easiest|fastest|painless|surest|best|least painful) (?:way|method)s? to die\b"
         r"|\bway to die (?:painlessly|without pain)\b", STRONG),
        (r"\b(?:which|what) (?:vein|artery|arteries|veins|wrist) (?:should|do|can|would) i (?:cut|slit|slice)\b",
         STRONG),
        (r"\b(?:hide|conceal|cover up) (?:my )?(?:self[- ]harm|cuts|scars|cutting)\b.{0,40}\b(?:parents|family|"
         r"mom|dad|teachers?|keep doing it)\b", STRONG),
        (r"\bhow (?:do|can|should) i (?:tie a noose|hang myself)\b|\bhow to tie a noose\b", MEDIUM),
        (r"\b(?:i want to die|i'?m done with life|nobody would (?:care|notice) if i (?:was|were) gone)\b", STRONG),
        (r"\b(?:cutting|burning) myself\b|\bself[- ]harm(?:ing)? (?:tips|methods|again)\b", STRONG),
        (r"\bsuicid(?:e|al)\b", WEAK),
    ]),
    "sexual_content": _features([
        (r"\b(?:write|describe|tell me|narrate|roleplay|generate)\s+(?:\w+\s+){0,4}?(?:(?:sexually )?explicit|"
         r"erotic|x-rated|nsfw|steamy|smutty|graphic sex|pornographic)\b", STRONG),
        (r"\b(?:porn|porno|pornography|hentai|xxx|nsfw|x-rated)\b", MEDIUM),
        (r"\b(?:blowjob|handjob|cumshot|orgasm\w*|masturbat\w*|dildo|threesome|orgy|deepthroat)\b", STRONG),
        (r"\b(?:his|her|my|your) (?:\w+ )?(?:cock|dick|pussy|clit|tits)\b", STRONG),
        (r"\b(?:his|her|my|your) (?:\w+ )?(?:boobs|nipples|penis|vagina)\b", WEAK),  # also medical questions
        (r"\bexplicit (?:sex|sexual|content|story|stories|scenes?|images?|pictures?)\b", MEDIUM),
        (r"\b(?:in )?explicit (?:detail|details|descriptions?)\b", WEAK),
        (r"\b(?:kink\w*|horny|talk dirty|dirty talk|dirty story|panties|sex positions?|in the bedroom)\b", WEAK),
        (r"\b(?:sext|sexting|nudes|naked pics|send (?:me )?nudes|onlyfans leaks?)\b", MEDIUM),
        (r"\b(?:have|having) sex with\b", MEDIUM),
        (r"\b(?:moan\w*|thrust\w*|naked|undress\w*|aroused)\b", WEAK),
    ]),
}


def _any_feature(features: tuple[Feature, ...]) -> re.Pattern[str] | None:
    """One pattern that matches where any of `features` does (an alternation), so a category none of whose
    features occur — nearly every text — costs one scan instead of one per feature (about half the time).
    None when the patterns cannot be joined (a global inline flag); the features are then tried one by one."""
    try:
        return re.compile("|".join(f"(?:{f.pattern.pattern})" for f in features))
    except re.error:
        return None


_ANY_FEATURE = {category: _any_feature(features) for category, features in LEXICON.items()}


def lexicon_scores(text: str) -> dict[str, float]:
    """Noisy-OR of matched feature weights per category (toxicity here is the harassment-phrase part only)."""
    text = text.lower()
    scores: dict[str, float] = {}
    for category, features in LEXICON.items():
        keep = 1.0
        screen = _ANY_FEATURE[category]
        if screen is not None and screen.search(text) is None:
            scores[category] = 0.0
            continue
        for feature in features:
            if feature.pattern.search(text):
                keep *= 1.0 - feature.weight
        scores[category] = 1.0 - keep
    # Llama Guard files sexual content involving a minor under S4 only, not also under S12 (adult content).
    if scores["child_sexual_exploitation"] >= 0.5:
        scores["sexual_content"] = 0.0
    return scores
