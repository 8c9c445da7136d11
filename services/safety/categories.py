"""The safety taxonomy: one fixed category order shared by the Triton classifier, its config and the service.

Classifier categories are modelled on Llama Guard 3's hazard taxonomy (S1 violent crimes, S2 non-violent crimes,
S4 child sexual exploitation, S9 indiscriminate weapons, S10 hate, S11 self-harm, S12 sexual content) plus a
toxicity / abuse score. Rule categories (PII, prompt injection, deny lists) are computed in the service itself.
"""

from __future__ import annotations

# The order of the classifier's `scores` output. model_repository/safety_classifier/config.pbtxt.tmpl repeats it
# (parameter "categories") and the model refuses to load if the two differ.
CLASSIFIER_CATEGORIES: tuple[str, ...] = (
    "toxicity",                   # alt-profanity-check (trained linear SVM) + harassment phrases
    "violent_crimes",             # Llama Guard S1
    "criminal_planning",          # S2: drugs synthesis, malware, fraud, account takeover
    "child_sexual_exploitation",  # S4
    "weapons",                    # S9: explosives, CBRN, illegal firearm manufacture/conversion
    "hate",                       # S10
    "self_harm",                  # S11
    "sexual_content",             # S12
)

PII_CATEGORIES: tuple[str, ...] = (
    "pii.email", "pii.phone", "pii.credit_card", "pii.iban", "pii.national_id", "pii.ip_address", "pii.secret",
)
INJECTION_CATEGORY = "prompt_injection"
DENY_CATEGORY = "deny_list"

ALL_CATEGORIES: tuple[str, ...] = (*CLASSIFIER_CATEGORIES, *PII_CATEGORIES, INJECTION_CATEGORY, DENY_CATEGORY)
