"""Phone numbers: normalise what people type to E.164 (``+2250701020304``).

The ``phonenumbers`` library carries Google's numbering-plan data, which
knows that Côte d'Ivoire numbers have ten digits since 31 January 2021.
An old eight-digit Ivorian number is refused, or converted on request with
the regulator's rule (see :func:`convert_old`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import phonenumbers

from .errors import InvalidMessageError

# Characters people put inside numbers: spaces (plain, non-breaking, thin),
# dots, dashes, brackets, slashes.
_SEPARATORS = re.compile(r"[\s.\-()/\u00a0\u202f\u2009]")
_SCIENTIFIC = re.compile(r"^\d+(?:[.,]\d+)?[eE]\+?\d+$")
_DECIMAL = re.compile(r"^\+?\d{5,}[.,]0+$")
# Two numbers of at least eight digits apart from a separator: "07… / 05…".
_TWO_NUMBERS = re.compile(r"\d(?:[\s.\-]?\d){7,}\s*(?:[/;,|&]|\bou\b|\bet\b)\s*\+?\d")
# Spreadsheet ways of forcing text: ="0701020304" and '0701020304.
_FORMULA_TEXT = re.compile(r'^="(.*)"$')
# The longest text read as a number: E.164 has at most 15 digits, and
# separators, a formula or two numbers in one cell stay far below this.
# Longer text is refused before any pattern runs (some take time that
# grows with the square of the length).
MAX_WRITTEN = 64

_MOBILE = (
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
)

CI_CODE = "225"
# Operators by the first two digits of a ten-digit Ivorian number: the
# prefix each operator received in 2021. A number ported to another
# operator keeps its prefix, so this names the operator that issued it.
CI_OPERATORS = {
    "01": "Moov",
    "05": "MTN",
    "07": "Orange",
    "21": "Moov",
    "25": "MTN",
    "27": "Orange",
}


@dataclass(frozen=True)
class Phone:
    """A valid number, with where it comes from."""

    e164: str
    country: str  # ISO 3166 region of the number, e.g. "CI"
    old_number: str | None = None  # the eight digits it was converted from
    # Known from the parse that made it; not part of the number's identity.
    is_mobile: bool = field(default=False, compare=False)

    @property
    def operator(self) -> str | None:
        """The Ivorian operator that issued the number, if it is Ivorian."""
        return operator(self.e164)


def normalize(raw: str, region: str | None = "CI") -> str:
    """Return ``raw`` as an E.164 number, or raise InvalidMessageError.

    A number without a country code is read in ``region``; with no region
    it is refused. The error message is a short French reason fit for an
    import report or a failed row.
    """
    return read(raw, region).e164


def read(raw: str, region: str | None = "CI", *, convert_old: bool = False) -> Phone:
    """Read one number as people write it; see :func:`normalize`.

    With ``convert_old``, an old eight-digit Ivorian number is converted to
    ten digits by :func:`convert_old` and checked again; otherwise it is
    refused with that reason.
    """
    text = raw.strip()
    if len(text) > MAX_WRITTEN:
        raise InvalidMessageError(
            f"numéro trop long ({len(text)} caractères, {MAX_WRITTEN} au plus)"
        )
    wrapped = _FORMULA_TEXT.match(text)
    if wrapped:
        text = wrapped.group(1).strip()
    text = text.removeprefix("'").strip()
    if not text:
        raise InvalidMessageError("numéro vide")
    if _SCIENTIFIC.match(text):
        raise InvalidMessageError(
            "notation scientifique (Excel) : chiffres perdus, saisir le numéro en texte"
        )
    if _DECIMAL.match(text):
        raise InvalidMessageError(
            "nombre à virgule (ex. 2250701020304.0) : le tableur a traité le"
            " numéro comme un nombre, saisir le numéro en texte"
        )
    if _TWO_NUMBERS.search(text):
        raise InvalidMessageError("deux numéros dans la cellule : n'en garder qu'un")
    compact = _SEPARATORS.sub("", text)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if not re.fullmatch(r"\+?\d+", compact):
        raise InvalidMessageError("caractères non numériques")
    old = _old_ivorian(compact, region)
    if old is not None:
        return _converted(old) if convert_old else _refuse_old()
    if not compact.startswith("+") and region is None:
        raise InvalidMessageError(
            "pas d'indicatif pays (+225…) et aucune région par défaut"
            " (WHATSAPP_DEFAULT_REGION)"
        )
    number = _parse(compact, region)
    if not phonenumbers.is_valid_number(number):
        raise InvalidMessageError(_why_invalid(number))
    return _phone(number)


def convert_old(digits: str) -> str | None:
    """Convert an old eight-digit Ivorian number to ten digits, or None.

    The rule published for the switch of 31 January 2021 adds the prefix of
    the operator that held the number then. Mobiles (first digit 0, 4 to 9)
    by their second digit: 0-3 Moov (01), 4-6 MTN (05), 7-9 Orange (07).
    Fixed lines (first digit 2 or 3) by their third digit: 8 Moov (21),
    0 MTN (25), any other Orange (27). Numbers starting with 1 (short and
    special numbers) did not change and are not converted.
    """
    if not re.fullmatch(r"\d{8}", digits):
        return None
    first, second, third = digits[0], digits[1], digits[2]
    if first in "23":
        prefix = {"8": "21", "0": "25"}.get(third, "27")
    elif first in "0456789":
        prefix = "01" if second in "0123" else "05" if second in "456" else "07"
    else:
        return None
    return prefix + digits


def operator(e164: str) -> str | None:
    """Return Orange, MTN or Moov for an Ivorian number, else None."""
    if not e164.startswith("+" + CI_CODE):
        return None
    return CI_OPERATORS.get(e164[4:6])


def mask(e164: str) -> str:
    """Hide the middle digits of a number for the log: ``+225******0304``.

    A text far longer than a number (a bad row's) keeps a short mask.
    """
    if len(e164) <= 8:
        return "*" * len(e164)
    head = e164[:4]
    tail = e164[-4:]
    hidden = len(e164) - 8
    stars = "*" * hidden if hidden <= MAX_WRITTEN else f"*…({hidden})…*"
    return f"{head}{stars}{tail}"


def _parse(compact: str, region: str | None) -> phonenumbers.PhoneNumber:
    """Parse, also accepting a country code written without ``+``."""
    try:
        number = phonenumbers.parse(compact, region)
    except phonenumbers.NumberParseException:
        raise InvalidMessageError("numéro illisible") from None
    if phonenumbers.is_valid_number(number) or compact.startswith("+"):
        return number
    code = str(phonenumbers.country_code_for_region(region or ""))
    if compact.startswith(code):
        try:
            with_code = phonenumbers.parse("+" + compact, region)
        except phonenumbers.NumberParseException:
            return number
        if phonenumbers.is_valid_number(with_code):
            return with_code
    return number


def _old_ivorian(compact: str, region: str | None) -> str | None:
    """Return the eight digits of an old Ivorian number, or None.

    Eight digits starting with 1 were short and special numbers, which the
    2021 switch left alone: they are not old numbers.
    """
    digits = None
    if compact.startswith("+" + CI_CODE) and len(compact) == 12:
        digits = compact[4:]
    elif region == "CI" and not compact.startswith("+"):
        if len(compact) == 8:
            digits = compact
        elif len(compact) == 11 and compact.startswith(CI_CODE):
            digits = compact[3:]
    return digits if digits and not digits.startswith("1") else None


def _refuse_old() -> Phone:
    raise InvalidMessageError(
        "ancien numéro à 8 chiffres (avant 2021) : ajouter le préfixe de"
        " l'opérateur, ou importer avec --convert-old-numbers"
    )


def _converted(old: str) -> Phone:
    ten = convert_old(old)
    if ten is not None:
        number = phonenumbers.parse("+" + CI_CODE + ten)
        if phonenumbers.is_valid_number(number):
            return _phone(number, old_number=old)
    raise InvalidMessageError(
        "ancien numéro à 8 chiffres sans équivalent valide à 10 chiffres"
    )


def _phone(number: phonenumbers.PhoneNumber, old_number: str | None = None) -> Phone:
    return Phone(
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        phonenumbers.region_code_for_number(number) or "",
        old_number,
        is_mobile=phonenumbers.number_type(number) in _MOBILE,
    )


def _why_invalid(number: phonenumbers.PhoneNumber) -> str:
    """Explain why a parsed number is not valid."""
    # The significant number keeps the leading zero that Ivorian numbers
    # have had since 2021 (``national_number`` drops it).
    national = phonenumbers.national_significant_number(number)
    if number.country_code != int(CI_CODE):
        return "numéro invalide pour son pays"
    if len(national) == 9 and national[0] != "0":
        return "9 chiffres sans le 0 initial : zéro perdu par un tableur ?"
    if len(national) < 10:
        return f"trop court ({len(national)} chiffres au lieu de 10)"
    if len(national) > 10:
        return f"trop long ({len(national)} chiffres au lieu de 10)"
    return "numéro invalide (préfixe inconnu)"
