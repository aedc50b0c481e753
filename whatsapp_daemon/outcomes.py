"""What the daemon does about each answer from Meta, keyed on ``error.code``.

The HTTP status is only a hint: Meta sends its throughput error 130429 as
HTTP 400, and some proxies answer 429 without a Graph body.
"""

from __future__ import annotations

from enum import StrEnum

from .errors import GraphAPIError


class Action(StrEnum):
    """The daemon's response to a failed attempt."""

    RETRY = "retry"  # transient: try again after a backoff; spends an attempt
    FAIL = "fail"  # permanent for this message: mark it failed now
    THROTTLE = "throttle"  # too fast: pause the whole sender; attempt refunded
    STOP = "stop"  # account or token problem: stop sending until fixed


# Codes whose action is not the default (RETRY). Sources: Meta's error-code
# reference for the Cloud API and Graph API's generic error handling guide.
ACTIONS: dict[int, Action] = {
    # Throughput and call-rate limits.
    4: Action.THROTTLE,  # application request limit
    17: Action.THROTTLE,  # user request limit
    32: Action.THROTTLE,  # page request limit
    613: Action.THROTTLE,  # calls exceed the rate limit
    80007: Action.THROTTLE,  # WhatsApp Business Account rate limit
    130429: Action.THROTTLE,  # Cloud API throughput reached
    # Token, permission and account problems: nothing can be sent.
    0: Action.STOP,  # authentication failed
    3: Action.STOP,  # capability or permission missing
    10: Action.STOP,  # permission denied
    102: Action.STOP,  # session invalid
    190: Action.STOP,  # access token expired or invalid
    200: Action.STOP,  # permission not granted
    368: Action.STOP,  # temporarily blocked for policy violations
    131005: Action.STOP,  # access denied
    131031: Action.STOP,  # business account locked
    131037: Action.STOP,  # display name not approved
    131042: Action.STOP,  # payment method problem
    131045: Action.STOP,  # phone number registration error
    131048: Action.STOP,  # spam rate limit: number restricted
    131064: Action.STOP,  # messaging limit after template violations
    133010: Action.STOP,  # phone number not registered
    134011: Action.STOP,  # payment terms not accepted
    # Permanent for this message.
    100: Action.FAIL,  # invalid parameter
    130403: Action.FAIL,  # business blocked this user
    130472: Action.FAIL,  # number part of an experiment
    130497: Action.FAIL,  # country restricted for this account
    131008: Action.FAIL,  # required parameter missing
    131009: Action.FAIL,  # parameter value not valid
    131021: Action.FAIL,  # recipient is the sender's own number
    131026: Action.FAIL,  # undeliverable: not on WhatsApp or old client
    131047: Action.FAIL,  # outside the 24-hour window: a template is needed
    131049: Action.FAIL,  # held back for healthy engagement
    131050: Action.FAIL,  # user stopped marketing messages
    131051: Action.FAIL,  # unsupported message type
    131053: Action.FAIL,  # media upload error
    131055: Action.FAIL,  # method not allowed
    131063: Action.FAIL,  # marketing templates disabled
    132000: Action.FAIL,  # template parameter count mismatch
    132001: Action.FAIL,  # template missing or not approved in that language
    132005: Action.FAIL,  # template text too long once filled
    132007: Action.FAIL,  # template content violates policy
    132012: Action.FAIL,  # template parameter format mismatch
    132015: Action.FAIL,  # template paused
    132016: Action.FAIL,  # template disabled
    132018: Action.FAIL,  # template parameter validation error
    132068: Action.FAIL,  # flow blocked
    135000: Action.FAIL,  # generic user error
}

# French explanations written to the log and stored with failed messages.
EXPLANATIONS: dict[int, str] = {
    131026: "numéro injoignable sur WhatsApp",
    131047: "hors fenêtre de 24 h : un modèle (template) approuvé est nécessaire",
    131050: "le destinataire a refusé les messages marketing",
    132000: "nombre de paramètres différent de celui du modèle approuvé",
    132001: "modèle inexistant ou non approuvé dans cette langue",
    190: "jeton d'accès expiré ou invalide : remplacer WHATSAPP_ACCESS_TOKEN",
    130429: "débit maximal de l'API atteint",
}

# Graph auth subcodes (under codes 102 and 190) that all mean a new token.
TOKEN_SUBCODES = frozenset({458, 459, 460, 463, 464, 467})
# Subcode of code 100 when the phone-number id in the URL does not exist.
UNKNOWN_OBJECT_SUBCODE = 33


def classify(error: GraphAPIError) -> Action:
    """Decide what to do about one error answer."""
    if error.code == 100 and error.subcode == UNKNOWN_OBJECT_SUBCODE:
        return Action.STOP
    if error.code is not None and error.code in ACTIONS:
        return ACTIONS[error.code]
    if error.code is not None and 200 <= error.code <= 299:
        return Action.STOP  # the whole 2xx range is permissions
    if error.subcode in TOKEN_SUBCODES or error.http_status == 401:
        return Action.STOP
    if error.code is None and error.http_status == 404:
        return Action.STOP  # wrong phone-number id or API URL: every send fails
    if error.code is None and error.http_status == 429:
        return Action.THROTTLE
    if error.code is None and 400 <= error.http_status < 500:
        return Action.FAIL  # a client error without a Graph body
    return Action.RETRY  # unknown codes and server errors: bounded retries


def explanation(code: int | None) -> str | None:
    """Return the plain-French meaning of a Meta error code, if known."""
    return EXPLANATIONS.get(code) if code is not None else None


def explain(error: GraphAPIError) -> str:
    """Return the reason stored and logged for ``error``."""
    plain = EXPLANATIONS.get(error.code) if error.code is not None else None
    return f"{plain} — {error.summary()}" if plain else error.summary()
