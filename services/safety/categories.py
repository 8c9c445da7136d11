"""The safety taxonomy: one fixed category order shared by the Triton classifier, its config and the service.

Classifier categories are Llama Guard 3's hazard taxonomy (S1–S14, S7 privacy beyond the PII formats the rules
find) plus a toxicity / abuse score; the learned head (pipelines/safety_classifier) scores all of them. Rule
categories (PII, prompt injection, deny lists) are computed in the service itself.
"""

from __future__ import annotations

# The order of the classifier's `scores` output. model_repository/safety_classifier/config.pbtxt.tmpl repeats it
# (parameter "categories") and the model refuses to load if the two differ.
CLASSIFIER_CATEGORIES: tuple[str, ...] = (
    "toxicity",                   # abuse and harassment aimed at someone
    "violent_crimes",             # Llama Guard S1
    "criminal_planning",          # S2: drugs synthesis, malware, fraud, account takeover
    "child_sexual_exploitation",  # S4
    "weapons",                    # S9: explosives, CBRN, illegal firearm manufacture/conversion
    "hate",                       # S10
    "self_harm",                  # S11
    "sexual_content",             # S12
    "sex_crimes",                 # S3: sexual assault, trafficking, non-consensual images
    "defamation",                 # S5: false damaging claims about real people
    "specialized_advice",         # S6: dangerous individual medical, legal, financial advice
    "privacy",                    # S7: stalking, doxxing, covert surveillance of a person
    "intellectual_property",      # S8: piracy, cracks, counterfeits, verbatim copyrighted text
    "elections",                  # S13: voting misinformation, fraud, suppression
    "code_interpreter_abuse",     # S14: using a code tool against its host or network
)

PII_CATEGORIES: tuple[str, ...] = (
    "pii.email", "pii.phone", "pii.credit_card", "pii.iban", "pii.national_id", "pii.ip_address", "pii.secret",
)
INJECTION_CATEGORY = "prompt_injection"
DENY_CATEGORY = "deny_list"

ALL_CATEGORIES: tuple[str, ...] = (*CLASSIFIER_CATEGORIES, *PII_CATEGORIES, INJECTION_CATEGORY, DENY_CATEGORY)
