"""PII and secret detection with checksums where the format has one (Luhn for cards, mod-97 for IBANs).

Each detector is a pattern plus an optional validator; a match that fails validation is not reported, which is
what keeps order numbers, timestamps, version strings and test hashes out of the results. Redaction replaces a
span with a typed placeholder such as `[EMAIL]`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Finding:
    start: int
    end: int
    category: str
    detector: str = "pii"


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: str) -> bool:
    digits = re.sub(r"[ -]", "", match)
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    return digits[0] in "23456" and luhn_valid(digits)  # Mastercard/Visa/Amex/Discover/JCB/Diners ranges


_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GI": 23, "GR": 27, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IS": 26, "IT": 27, "KW": 30, "KZ": 20, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31,
    "NL": 18, "NO": 15, "PL": 28, "PT": 25, "QA": 29, "RO": 24, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "TR": 26, "UA": 29,
}


def iban_valid(value: str) -> bool:
    iban = re.sub(r"\s", "", value).upper()
    expected = _IBAN_LENGTHS.get(iban[:2])
    if expected is not None and len(iban) != expected:
        return False
    if not 15 <= len(iban) <= 34 or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _ssn(match: str) -> bool:
    area, group, serial = re.split(r"[ -]", match)
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def verhoeff_valid(digits: str) -> bool:
    """The Verhoeff check (Aadhaar numbers carry one): catches every single-digit error and adjacent swap."""
    check = 0
    for i, ch in enumerate(reversed(digits)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[i % 8][ord(ch) - 48]]
    return check == 0


_VERHOEFF_D = ((0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 0, 6, 7, 8, 9, 5), (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
               (3, 4, 0, 1, 2, 8, 9, 5, 6, 7), (4, 0, 1, 2, 3, 9, 5, 6, 7, 8), (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
               (6, 5, 9, 8, 7, 1, 0, 4, 3, 2), (7, 6, 5, 9, 8, 2, 1, 0, 4, 3), (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
               (9, 8, 7, 6, 5, 4, 3, 2, 1, 0))
_VERHOEFF_P = ((0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 5, 7, 6, 2, 8, 3, 0, 9, 4), (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
               (8, 9, 1, 6, 0, 4, 3, 5, 2, 7), (9, 4, 5, 3, 1, 2, 7, 8, 6, 0), (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
               (2, 7, 9, 3, 8, 0, 6, 4, 1, 5), (7, 0, 4, 6, 9, 1, 3, 2, 5, 8))


def _digits(match: str) -> str:
    return re.sub(r"\D", "", match)


def _public_ip(match: str) -> bool:
    try:
        address = ipaddress.ip_address(match)
    except ValueError:
        return False
    # Loopback, private, link-local, unspecified and documentation ranges identify no one; public addresses may.
    return address.is_global


def _email(match: str) -> bool:
    local, domain = match.lower().split("@", 1)
    if local == "git":  # git@host:owner/repo is an SSH remote, not a mailbox
        return False
    # Reserved names (RFC 2606 / 6761) and "tld" placeholders never reach a person.
    return not (_RESERVED_DOMAIN.search(domain))


_RESERVED_DOMAIN = re.compile(r"(?:^|\.)(?:example\.(?:com|org|net)|[^.]+\.(?:test|example|invalid|localhost|tld))$")


@dataclass(frozen=True, slots=True)
class PiiPattern:
    category: str
    pattern: re.Pattern[str]
    validate: Callable[[str], bool] | None = None
    group: int = 0  # the part of the match that is the sensitive value
    # Formats too generic to stand alone (9 or 12 digits) count only after a label naming them ("SIN", "Aadhaar");
    # `context` must match the text just before the value.
    context: re.Pattern[str] | None = None
    # Labels that say a digit group is something else ("meeting ID 845 2931 7764", "order no."): not reported.
    not_after: re.Pattern[str] | None = None


_BEFORE = 40  # characters before a value that `context` / `not_after` look at
_NOT_A_PHONE = re.compile(
    r"(?i)\b(?:meeting|webinar|conference|zoom|order|tracking|invoice|reference|ref|ticket|case|booking|"
    r"confirmation|account|acct|policy|serial|part|model|isbn|customer|member|membership|transaction|parcel|"
    r"package|shipment|receipt|passcode|pin|id)\b\W{0,3}(?:id|no|nr|number|#|code)?\W{0,3}(?:is|was|:)?\W{0,3}$")


_HEX = r"[0-9A-Fa-f]{1,4}"
PATTERNS: tuple[PiiPattern, ...] = (
    PiiPattern("pii.secret", re.compile(
        r"-----BEGIN (?:RSA |EC |OPENSSH |DSA |PGP )?PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
        r"(?:-----END (?:RSA |EC |OPENSSH |DSA |PGP )?PRIVATE KEY(?: BLOCK)?-----|$)")),
    PiiPattern("pii.secret", re.compile(
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"                       # AWS access key id
        r"|\bgh[pousr]_[A-Za-z0-9]{36,255}\b"                  # GitHub tokens
        r"|\bgithub_pat_[A-Za-z0-9_]{22,255}\b"
        r"|\bsk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_-]{32,}\b"  # OpenAI / Anthropic-style keys
        r"|\b[rs]k_live_[A-Za-z0-9]{20,}\b"                    # Stripe live keys
        r"|\bxox[abposr]-[A-Za-z0-9-]{10,}\b"                  # Slack tokens
        r"|\bAIza[0-9A-Za-z_-]{35}\b"                          # Google API keys
        r"|\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"  # JWTs
        r"|\bglpat-[A-Za-z0-9_-]{20}\b"                        # GitLab tokens
        r"|\bnpm_[A-Za-z0-9]{36}\b")),
    # key = "value" assignments whose value looks like a real secret (long, mixed, not a placeholder).
    PiiPattern("pii.secret", re.compile(
        r"(?i)\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token|client[_-]?secret)"
        r"[\"']?\s{0,3}[:=]\s{0,3}[\"']?((?![\"'<{$])[^\s\"',;]{8,})"),
        lambda v: not re.fullmatch(r"(?i)(?:x+|\*+|changeme|password\d*|your[_-]?\w*|<.*>|\$\{?\w+\}?|"
                                   r"os\.environ.*|process\.env.*|none|null|true|false|example\w*)", v)
        and bool(re.search(r"\d", v)) and bool(re.search(r"[A-Za-z]", v)), group=1),
    PiiPattern("pii.email", re.compile(
        r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}\b(?![@(])"), _email),
    PiiPattern("pii.iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"), iban_valid),
    PiiPattern("pii.credit_card", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), _card),
    PiiPattern("pii.national_id", re.compile(r"(?<![\d-])\d{3}([- ])\d{2}\1\d{4}(?![\d-])"), _ssn),  # US SSN
    PiiPattern("pii.national_id", re.compile(r"(?<![\d-])\d{3}[ -]?\d{3}[ -]?\d{3}(?![\d-])"),  # Canada SIN
               lambda v: _digits(v)[0] not in "08" and luhn_valid(_digits(v)),
               context=re.compile(r"(?i)\b(?:SIN|social insurance)(?: (?:no\.?|number|#))?\W{0,4}(?:is\W{0,2})?$")),
    PiiPattern("pii.national_id", re.compile(r"(?<![\d-])[2-9]\d{3}[ -]?\d{4}[ -]?\d{4}(?![\d-])"),  # Aadhaar
               lambda v: verhoeff_valid(_digits(v)),
               context=re.compile(r"(?i)\b(?:aadhaar|aadhar|uid(?:ai)?)(?: (?:no\.?|number|#|card))?\W{0,4}"
                                  r"(?:is\W{0,2})?$")),
    PiiPattern("pii.national_id", re.compile(  # UK National Insurance number
        r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")),
    PiiPattern("pii.phone", re.compile(
        r"(?<![\w+-])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .-]\d{3,4}[ .-]\d{3,4}(?![ .-]?\d)"
        r"|(?<![\w+])\+\d{10,14}(?!\d)"
        r"|(?<![\w+-])0\d{3,4}[ .-]\d{6,7}(?![ .-]?\d)"),  # national format with a trunk 0: 07700 900123
        not_after=_NOT_A_PHONE),
    PiiPattern("pii.ip_address", re.compile(
        r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
        r"(?!\w|\.\w)"),  # a sentence's full stop may follow
        _public_ip),
    PiiPattern("pii.ip_address", re.compile(
        rf"(?<![\w:])(?:(?:{_HEX}:){{7}}{_HEX}|(?:{_HEX}:){{1,7}}:(?:{_HEX}(?::{_HEX}){{0,5}})?)(?![\w:])"),
        _public_ip),
)

PLACEHOLDERS = {
    "pii.email": "[EMAIL]", "pii.phone": "[PHONE]", "pii.credit_card": "[CREDIT_CARD]", "pii.iban": "[IBAN]",
    "pii.national_id": "[NATIONAL_ID]", "pii.ip_address": "[IP_ADDRESS]", "pii.secret": "[SECRET]",
}


def find_pii(text: str, allowed: Callable[[str], bool] | None = None) -> list[Finding]:
    """Non-overlapping findings sorted by start; earlier patterns (secrets) win overlaps. `allowed(value)` true
    exempts a match (a tenant's allow list)."""
    found: list[Finding] = []
    for spec in PATTERNS:
        for match in spec.pattern.finditer(text):
            value = match.group(spec.group)
            start, end = match.span(spec.group)
            if spec.validate is not None and not spec.validate(value):
                continue
            before = text[max(0, start - _BEFORE):start]
            if spec.context is not None and not spec.context.search(before):
                continue
            if spec.not_after is not None and spec.not_after.search(before):
                continue
            if allowed is not None and allowed(value):
                continue
            if any(f.start < end and start < f.end for f in found):
                continue
            found.append(Finding(start, end, spec.category))
    return sorted(found, key=lambda f: f.start)


def redact(text: str, findings: Iterable[Finding]) -> str:
    """Replaces each span with its placeholder (spans must not overlap)."""
    out, last = [], 0
    for finding in sorted(findings, key=lambda f: f.start):
        out.append(text[last:finding.start])
        out.append(PLACEHOLDERS.get(finding.category, "[REDACTED]"))
        last = finding.end
    out.append(text[last:])
    return "".join(out)
