"""Phone numbers: normalise what people type to E.164 (``+2250701020304``).

The ``phonenumbers`` library carries Google's numbering-plan data, which
knows that Côte d'Ivoire numbers have ten digits since 31 January 2021.
"""

from __future__ import annotations

import re

import phonenumbers

from .errors import InvalidMessageError

# Characters people put inside numbers: spaces, dots, dashes, brackets, slashes.
_SEPARATORS = re.compile(r"[\s.\-()/\u00a0]")
_SCIENTIFIC = re.compile(r"^\d+(?:[.,]\d+)?[eE]\+?\d+$")


def normalize(raw: str, region: str = "CI") -> str:
    """Return ``raw`` as an E.164 number, or raise InvalidMessageError.

    A number without a country code is read in ``region``. The error message
    is a short French reason fit for an import report or a failed row.
    """
    text = raw.strip()
    if not text:
        raise InvalidMessageError("numéro vide")
    if _SCIENTIFIC.match(text):
        raise InvalidMessageError("notation scientifique (Excel) : chiffres perdus")
    compact = _SEPARATORS.sub("", text)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if not re.fullmatch(r"\+?\d+", compact):
        raise InvalidMessageError("caractères non numériques")
    number = _parse(compact, region)
    if not phonenumbers.is_valid_number(number):
        raise InvalidMessageError(_why_invalid(number, region))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask(e164: str) -> str:
    """Hide the middle digits of a number for the log: ``+225******0304``."""
    if len(e164) <= 8:
        return "*" * len(e164)
    head = e164[:4]
    tail = e164[-4:]
    return f"{head}{'*' * (len(e164) - 8)}{tail}"


def _parse(compact: str, region: str) -> phonenumbers.PhoneNumber:
    """Parse, also accepting a country code written without ``+``."""
    try:
        number = phonenumbers.parse(compact, region)
    except phonenumbers.NumberParseException:
        raise InvalidMessageError("numéro illisible") from None
    if phonenumbers.is_valid_number(number) or compact.startswith("+"):
        return number
    code = str(phonenumbers.country_code_for_region(region))
    if compact.startswith(code):
        try:
            with_code = phonenumbers.parse("+" + compact, region)
        except phonenumbers.NumberParseException:
            return number
        if phonenumbers.is_valid_number(with_code):
            return with_code
    return number


def _why_invalid(number: phonenumbers.PhoneNumber, region: str) -> str:
    """Explain why a parsed number is not valid."""
    # The significant number keeps the leading zero that Ivorian numbers
    # have had since 2021 (``national_number`` drops it).
    national = phonenumbers.national_significant_number(number)
    if number.country_code == 225 and len(national) == 8:
        return "ancien numéro à 8 chiffres (avant 2021)"
    if number.country_code == 225 and len(national) == 9 and national[0] != "0":
        return "9 chiffres sans le 0 initial : zéro perdu par un tableur ?"
    if number.country_code == 225 and len(national) < 10:
        return f"trop court ({len(national)} chiffres au lieu de 10)"
    if number.country_code == 225 and len(national) > 10:
        return f"trop long ({len(national)} chiffres au lieu de 10)"
    return "numéro invalide"
