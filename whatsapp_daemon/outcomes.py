"""What the daemon does about each answer from Meta, keyed on ``error.code``.

One table, :data:`RULES`, gives for every code of Meta's error reference (and
Graph's generic codes) the action taken and its meaning in plain French; the
log, the stored reason and ``make status`` all read it. The HTTP status is
only a hint: Meta sends its throughput error 130429 as HTTP 400, and some
proxies answer 429 without a Graph body.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from .errors import GraphAPIError


class Action(StrEnum):
    """The daemon's response to a failed attempt."""

    RETRY = "retry"  # transient: try again after a backoff; spends an attempt
    THROTTLE = "throttle"  # too fast: the whole sender waits; attempt given back
    FAIL = "fail"  # permanent for this message: mark it failed now
    PAUSE_RECIPIENT = "pause_recipient"  # this recipient waits; others go on
    PAUSE_TEMPLATE = "pause_template"  # hold every message with this template
    STOP = "stop"  # account or token problem: stop sending until fixed


class Rule(NamedTuple):
    """What one error code means and what the daemon does about it."""

    action: Action
    meaning: str  # plain French, for the log, the stored reason and the status
    pause: float = 0.0  # THROTTLE: seconds the sender first waits
    template: bool = False  # FAIL: counts towards holding the template


R, T, F = Action.RETRY, Action.THROTTLE, Action.FAIL
P, H, S = Action.PAUSE_RECIPIENT, Action.PAUSE_TEMPLATE, Action.STOP

# Sources: Meta's error-code reference for the Cloud API and the Graph API's
# error-handling guide. Registration codes (133xxx) cannot come from a send
# but are listed so that a stray one stops the sender with its meaning.
RULES: dict[int, Rule] = {
    # Graph API generic codes.
    0: Rule(S, "authentification impossible : jeton expiré ou accès retiré"),
    1: Rule(R, "erreur inconnue de l'API (requête invalide ou panne)"),
    2: Rule(R, "service de l'API momentanément indisponible"),
    3: Rule(S, "l'application n'a pas la capacité ou la permission requise"),
    4: Rule(T, "trop d'appels de l'application : envois ralentis", 60.0),
    10: Rule(S, "permission refusée ou retirée à l'application"),
    17: Rule(T, "trop d'appels de cet utilisateur de l'API : envois ralentis", 60.0),
    32: Rule(T, "trop d'appels pour cette page : envois ralentis", 60.0),
    33: Rule(S, "numéro professionnel supprimé : vérifier WHATSAPP_PHONE_NUMBER_ID"),
    100: Rule(F, "paramètre invalide dans la requête"),
    102: Rule(S, "session expirée : un nouveau jeton d'accès est nécessaire"),
    190: Rule(S, "jeton d'accès expiré ou invalide : remplacer WHATSAPP_ACCESS_TOKEN"),
    200: Rule(S, "permission de l'API non accordée ou retirée"),
    341: Rule(T, "limite d'appels de l'application atteinte : envois ralentis", 60.0),
    368: Rule(S, "compte temporairement bloqué pour non-respect des règles"),
    506: Rule(F, "requête identique à une précédente : message en double"),
    613: Rule(T, "trop d'appels à l'API : envois ralentis", 60.0),
    80007: Rule(T, "limite d'appels du compte WhatsApp Business atteinte", 60.0),
    # Throughput, recipients and policy.
    130403: Rule(F, "l'entreprise a bloqué ce destinataire : le débloquer d'abord"),
    130429: Rule(T, "débit maximal de l'API atteint : envois ralentis", 10.0),
    130472: Rule(F, "numéro inclus dans une expérience de Meta : message non envoyé"),
    130497: Rule(F, "le compte ne peut pas écrire aux destinataires de ce pays"),
    131000: Rule(R, "erreur inconnue chez Meta"),
    131005: Rule(S, "accès refusé : permission manquante"),
    131008: Rule(F, "paramètre obligatoire manquant"),
    131009: Rule(F, "valeur de paramètre invalide (ou message visé trop ancien)"),
    131016: Rule(R, "service de Meta momentanément indisponible"),
    131021: Rule(F, "le destinataire est le numéro expéditeur lui-même"),
    131026: Rule(
        F,
        "message non distribuable : numéro absent de WhatsApp, conditions non"
        " acceptées ou application trop ancienne",
    ),
    131031: Rule(S, "compte WhatsApp Business verrouillé"),
    131037: Rule(S, "nom d'affichage du numéro pas encore approuvé"),
    131042: Rule(S, "problème d'éligibilité ou de moyen de paiement du compte"),
    131045: Rule(S, "certificat incorrect : erreur d'enregistrement du numéro"),
    131047: Rule(F, "hors fenêtre de 24 h : un modèle (template) est nécessaire"),
    131048: Rule(S, "limite anti-spam : numéro restreint (voir WhatsApp Manager)"),
    131049: Rule(
        F,
        "non distribué pour préserver l'engagement (plafond marketing du"
        " destinataire) : ne pas renvoyer avant 24 h",
    ),
    131050: Rule(F, "le destinataire a refusé les messages marketing"),
    131051: Rule(F, "type de message non pris en charge"),
    131052: Rule(F, "erreur de téléchargement du média"),
    131053: Rule(F, "erreur d'envoi du média : type refusé ou lien inaccessible"),
    131055: Rule(F, "méthode non autorisée pour ce numéro"),
    131056: Rule(P, "trop de messages à ce destinataire en peu de temps : il attend"),
    131057: Rule(T, "compte en maintenance : envois repris dans une minute", 60.0),
    131063: Rule(H, "modèles marketing désactivés pour ce compte"),
    131064: Rule(S, "envois limités après des violations de classement des modèles"),
    # Templates.
    132000: Rule(F, "nombre de paramètres différent du modèle approuvé", template=True),
    132001: Rule(H, "modèle inexistant ou non approuvé dans cette langue"),
    132005: Rule(F, "texte du modèle trop long une fois rempli", template=True),
    132007: Rule(F, "contenu du modèle contraire aux règles", template=True),
    132012: Rule(F, "format de paramètre différent du modèle", template=True),
    132015: Rule(H, "modèle en pause pour qualité faible"),
    132016: Rule(H, "modèle désactivé : un nouveau modèle est nécessaire"),
    132018: Rule(F, "paramètres du modèle invalides", template=True),
    132068: Rule(F, "flux (Flow) bloqué"),
    132069: Rule(F, "flux (Flow) limité à 10 envois par heure : renvoyer plus tard"),
    # Phone number registration: nothing can be sent until it is fixed.
    133000: Rule(S, "désinscription du numéro inachevée"),
    133004: Rule(R, "serveur de Meta momentanément indisponible"),
    133005: Rule(S, "code PIN de la validation en deux étapes incorrect"),
    133006: Rule(S, "le numéro doit être vérifié à nouveau"),
    133008: Rule(S, "trop d'essais de code PIN"),
    133009: Rule(S, "code PIN saisi trop vite"),
    133010: Rule(S, "numéro non enregistré sur la plateforme WhatsApp"),
    133015: Rule(S, "numéro supprimé récemment : attendre 5 minutes"),
    133016: Rule(S, "trop d'enregistrements ou de désinscriptions du numéro"),
    134011: Rule(S, "conditions de WhatsApp Payments non acceptées"),
    135000: Rule(F, "erreur dans les paramètres de la requête"),
    2494100: Rule(T, "compte en maintenance (migration du numéro)", 180.0),
}

# Graph auth subcodes (under codes 102 and 190) that all mean a new token.
TOKEN_SUBCODES: dict[int, str] = {
    458: "application désinstallée : un nouveau jeton est nécessaire",
    459: "compte en vérification de sécurité : se connecter à Facebook",
    460: "mot de passe changé : un nouveau jeton est nécessaire",
    463: "jeton d'accès expiré : remplacer WHATSAPP_ACCESS_TOKEN",
    464: "utilisateur non confirmé : un nouveau jeton est nécessaire",
    467: "jeton d'accès invalide : remplacer WHATSAPP_ACCESS_TOKEN",
}
# Subcode of code 100 when the phone-number id in the URL does not exist.
UNKNOWN_OBJECT_SUBCODE = 33
# A code missing from RULES is retried within the attempt budget, then failed.
UNKNOWN_CODE = Rule(R, "code d'erreur inconnu : réessayé, puis abandonné")


def rule(error: GraphAPIError) -> Rule:
    """Return the rule that applies to one error answer."""
    code = error.code
    if code == 100 and error.subcode == UNKNOWN_OBJECT_SUBCODE:
        return RULES[33]
    if error.subcode in TOKEN_SUBCODES:
        return Rule(S, TOKEN_SUBCODES[error.subcode])
    if code is not None and code in RULES:
        return RULES[code]
    if code is not None and 200 <= code <= 299:
        return RULES[200]  # the whole 2xx range is permissions
    if code is None:
        return _without_code(error.http_status)
    return UNKNOWN_CODE


def _without_code(http_status: int) -> Rule:
    """A rule for an answer without a Graph body (a proxy, a gateway)."""
    if http_status == 401:
        return Rule(S, "accès refusé (HTTP 401) : vérifier WHATSAPP_ACCESS_TOKEN")
    if http_status == 404:
        # A wrong phone-number id or API URL: every send would fail.
        return Rule(S, "adresse de l'API introuvable (HTTP 404) : vérifier la config")
    if http_status == 429:
        return Rule(T, "trop de requêtes (HTTP 429) : envois ralentis", 10.0)
    if 400 <= http_status < 500:
        return Rule(F, f"requête refusée (HTTP {http_status}) sans détail de Meta")
    return Rule(R, f"erreur du serveur (HTTP {http_status})")


def classify(error: GraphAPIError) -> Action:
    """Decide what to do about one error answer."""
    return rule(error).action


def explanation(code: int | None) -> str | None:
    """Return the plain-French meaning of a Meta error code, if known."""
    if code is None:
        return None
    if code in RULES:
        return RULES[code].meaning
    return RULES[200].meaning if 200 <= code <= 299 else None


def explain(error: GraphAPIError) -> str:
    """Return the reason stored and logged for ``error``: meaning, then Meta's."""
    return f"{rule(error).meaning} — {error.summary()}"
