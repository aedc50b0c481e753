"""Phone numbers as people write them: ``phones.read`` and its helpers.

Tables of inputs and expected results: the ways one Ivorian number is
written, foreign numbers, what is refused and why (the French reason shown
in import reports), the 2021 rule converting old eight-digit numbers, the
operator of a number, and numbers read without a default region.
"""

from __future__ import annotations

import phonenumbers
import pytest

from whatsapp_daemon import phones
from whatsapp_daemon.errors import InvalidMessageError

AYA = "+2250701020304"
NBSP, NNBSP, THIN = "\u00a0", "\u202f", "\u2009"

SAME_NUMBER = [
    pytest.param("07 01 02 03 04", id="spaces"),
    pytest.param("07.01.02.03.04", id="dots"),
    pytest.param("07-01-02-03-04", id="dashes"),
    pytest.param("07/01/02/03/04", id="slashes"),
    pytest.param("(07) 01 02 03 04", id="brackets"),
    pytest.param("+225 07 01 02 03 04", id="plus-225"),
    pytest.param("+225 (0)7 01 02 03 04", id="plus-225-bracketed-zero"),
    pytest.param("+2250701020304", id="e164"),
    pytest.param("00225 07 01 02 03 04", id="00225"),
    pytest.param("2250701020304", id="225-without-plus"),
    pytest.param("0701020304", id="ten-digits"),
    pytest.param(NBSP.join(["07", "01", "02", "03", "04"]), id="no-break-spaces"),
    pytest.param(NNBSP.join(["07", "01", "02", "03", "04"]), id="narrow-no-break"),
    pytest.param(THIN.join(["07", "01", "02", "03", "04"]), id="thin-spaces"),
    pytest.param('="0701020304"', id="excel-formula-text"),
    pytest.param('="07 01 02 03 04"', id="excel-formula-text-spaced"),
    pytest.param("'0701020304", id="leading-apostrophe"),
    pytest.param("\t 0701020304 \n", id="surrounding-whitespace"),
]

FOREIGN = [
    pytest.param("+33 6 12 34 56 78", "+33612345678", "FR", id="france-mobile"),
    pytest.param("0033 7 81 23 45 67", "+33781234567", "FR", id="france-0033"),
    pytest.param("+221 77 123 45 67", "+221771234567", "SN", id="senegal"),
    pytest.param("+1 (415) 555-2671", "+14155552671", "US", id="united-states"),
    pytest.param("+226 70 12 34 56", "+22670123456", "BF", id="burkina-faso"),
    pytest.param("+233 24 123 4567", "+233241234567", "GH", id="ghana"),
]

OLD_NUMBER = "ancien numéro à 8 chiffres (avant 2021)"
LOST_ZERO = "9 chiffres sans le 0 initial : zéro perdu par un tableur ?"
SCIENTIFIC = "notation scientifique (Excel)"
TWO_NUMBERS = "deux numéros dans la cellule : n'en garder qu'un"
DECIMAL = "nombre à virgule (ex. 2250701020304.0)"

REFUSED = [
    pytest.param("", "numéro vide", id="empty"),
    pytest.param("   ", "numéro vide", id="blank"),
    pytest.param('=""', "numéro vide", id="empty-formula-text"),
    pytest.param("'", "numéro vide", id="lone-apostrophe"),
    pytest.param("abc", "caractères non numériques", id="letters"),
    pytest.param("+", "caractères non numériques", id="lone-plus"),
    pytest.param("07 01 02 03 04 ext 5", "caractères non numériques", id="ext"),
    pytest.param("0707123456;0505", TWO_NUMBERS, id="semicolon"),
    pytest.param("07 01 02 03 04 / 05 01 02 03 04", TWO_NUMBERS, id="two-slash"),
    pytest.param("0701020304; 0501020304", TWO_NUMBERS, id="two-semicolon"),
    pytest.param("0701020304, 0501020304", TWO_NUMBERS, id="two-comma"),
    pytest.param("07 01 02 03 04 ou 05 01 02 03 04", TWO_NUMBERS, id="two-ou"),
    pytest.param("07.01.02.03.04 et +225 05 01 02 03 04", TWO_NUMBERS, id="two-et"),
    pytest.param("2250701020304.0", DECIMAL, id="decimal-dot"),
    pytest.param("2250701020304,0", DECIMAL, id="decimal-comma"),
    pytest.param("+2250701020304.00", DECIMAL, id="decimal-after-plus"),
    pytest.param("701020304.0", DECIMAL, id="decimal-lost-zero"),
    pytest.param("701020304", LOST_ZERO, id="lost-zero"),
    pytest.param("+225 501020304", LOST_ZERO, id="lost-zero-after-plus-225"),
    pytest.param("225501020304", LOST_ZERO, id="lost-zero-after-225"),
    pytest.param("7,01020304E+08", SCIENTIFIC, id="scientific-comma"),
    pytest.param("2.25070102E+12", SCIENTIFIC, id="scientific-dot"),
    pytest.param("7.01e8", SCIENTIFIC, id="scientific-lowercase"),
    # Refused before any pattern runs: some take time growing as n².
    pytest.param("9" * 1_000_000, "numéro trop long (1000000 caractères", id="huge"),
    pytest.param("070102030", "trop court (9 chiffres au lieu de 10)", id="short"),
    pytest.param("07010203045", "trop long (11 chiffres au lieu de 10)", id="too-long"),
    pytest.param(
        "+225 07 01 02 03 04 05", "trop long (12 chiffres au lieu de 10)", id="long"
    ),
    pytest.param(
        "0601020304", "numéro invalide (préfixe inconnu)", id="unassigned-prefix"
    ),
    pytest.param("+33 1 23", "numéro invalide pour son pays", id="france-short"),
    pytest.param(
        "+221 12 345 67", "numéro invalide pour son pays", id="senegal-invalid"
    ),
    pytest.param("+1 555 0100", "numéro invalide pour son pays", id="us-invalid"),
    pytest.param("01 02 03 04", OLD_NUMBER, id="old-8-digits"),
    pytest.param("+225 01 02 03 04", OLD_NUMBER, id="old-plus-225"),
    pytest.param("22501020304", OLD_NUMBER, id="old-225-without-plus"),
    pytest.param("00225 07 12 34 56", OLD_NUMBER, id="old-00225"),
    pytest.param("20 21 23 45", OLD_NUMBER, id="old-fixed-line"),
    pytest.param(
        "10 12 34 56", "trop court (8 chiffres au lieu de 10)", id="eight-from-1"
    ),
]

# convert_old: (eight digits, ten digits). Mobiles by their second digit,
# fixed lines (first digit 2 or 3) by their third.
CONVERSIONS = [
    pytest.param("01020304", "0101020304", id="mobile-2nd-0-moov"),
    pytest.param("41123456", "0141123456", id="mobile-2nd-1-moov"),
    pytest.param("52123456", "0152123456", id="mobile-2nd-2-moov"),
    pytest.param("03123456", "0103123456", id="mobile-2nd-3-moov"),
    pytest.param("44123456", "0544123456", id="mobile-2nd-4-mtn"),
    pytest.param("05123456", "0505123456", id="mobile-2nd-5-mtn"),
    pytest.param("66123456", "0566123456", id="mobile-2nd-6-mtn"),
    pytest.param("07123456", "0707123456", id="mobile-2nd-7-orange"),
    pytest.param("88123456", "0788123456", id="mobile-2nd-8-orange"),
    pytest.param("59123456", "0759123456", id="mobile-2nd-9-orange"),
    pytest.param("20812345", "2120812345", id="fixed-3rd-8-moov"),
    pytest.param("22001234", "2522001234", id="fixed-3rd-0-mtn"),
    pytest.param("30012345", "2530012345", id="fixed-starting-3-3rd-0-mtn"),
    pytest.param("20212345", "2720212345", id="fixed-3rd-2-orange"),
    pytest.param("30640000", "2730640000", id="fixed-3rd-6-orange"),
    pytest.param("31912345", "2731912345", id="fixed-3rd-9-orange"),
]

NOT_CONVERTED = [
    pytest.param("10123456", id="short-and-special-numbers-start-with-1"),
    pytest.param("0102030", id="seven-digits"),
    pytest.param("010203040", id="nine-digits"),
    pytest.param("0102 0304", id="with-a-space"),
    pytest.param("0102O304", id="letter-o"),
    pytest.param("", id="empty"),
]

# Old numbers as written, read with convert_old=True.
CONVERTED_READS = [
    pytest.param("01 02 03 04", "+2250101020304", "01020304", id="spaced"),
    pytest.param("+225 48 12 34 56", "+2250748123456", "48123456", id="plus-225"),
    pytest.param("22545123456", "+2250545123456", "45123456", id="225-no-plus"),
    pytest.param("00225 07 12 34 56", "+2250707123456", "07123456", id="00225"),
    pytest.param("20.81.23.45", "+2252120812345", "20812345", id="fixed-dots"),
    pytest.param("+225 30 64 00 00", "+2252730640000", "30640000", id="fixed-225"),
]

# Old fixed numbers whose 27 prefix lands in a range phonenumbers knows as
# unassigned: the conversion must be refused, not queued.
CONVERTED_BUT_INVALID = [
    pytest.param("20145678", id="fixed-201"),
    pytest.param("31512345", id="fixed-315"),
    pytest.param("+225 20 14 56 78", id="fixed-201-with-plus-225"),
]

OPERATORS = [
    pytest.param("+2250701020304", "Orange", id="07-orange"),
    pytest.param("+2250501020304", "MTN", id="05-mtn"),
    pytest.param("+2250101020304", "Moov", id="01-moov"),
    pytest.param("+2252720212345", "Orange", id="27-orange-fixed"),
    pytest.param("+2252520012345", "MTN", id="25-mtn-fixed"),
    pytest.param("+2252120812345", "Moov", id="21-moov-fixed"),
    pytest.param("+2250601020304", None, id="unassigned-prefix"),
    pytest.param("+33612345678", None, id="foreign"),
    pytest.param("2250701020304", None, id="not-e164"),
    pytest.param("+225", None, id="country-code-only"),
]


def refusal(raw: str, region: str | None = "CI", *, convert_old: bool = False) -> str:
    """The reason ``phones.read`` gives for refusing ``raw``."""
    with pytest.raises(InvalidMessageError) as caught:
        phones.read(raw, region, convert_old=convert_old)
    return str(caught.value)


# -- one person written many ways ------------------------------------------------


@pytest.mark.parametrize("raw", SAME_NUMBER)
def test_every_spelling_of_an_ivorian_number_reads_as_one_e164(raw: str) -> None:
    """Spaces, dots, brackets, +225, 00225, Excel text forms: one E.164 number."""
    assert phones.read(raw) == phones.Phone(AYA, "CI", None)
    assert phones.normalize(raw) == AYA


@pytest.mark.parametrize(("raw", "e164", "country"), FOREIGN)
def test_valid_foreign_numbers_are_accepted_with_their_country(
    raw: str, e164: str, country: str
) -> None:
    """A number with another country code is kept, its region named."""
    found = phones.read(raw)
    assert (found.e164, found.country, found.old_number) == (e164, country, None)
    assert found.operator is None


def test_a_national_number_is_read_in_the_region_given() -> None:
    """With region FR, a French national number (and 33 without +) is French."""
    assert phones.normalize("06 12 34 56 78", "FR") == "+33612345678"
    assert phones.normalize("33612345678", "FR") == "+33612345678"
    assert phones.normalize("+225 07 01 02 03 04", "FR") == AYA


# -- refused, with a reason -------------------------------------------------------


@pytest.mark.parametrize(("raw", "reason"), REFUSED)
def test_unusable_numbers_are_refused_with_a_french_reason(
    raw: str, reason: str
) -> None:
    """Empty, letters, two numbers, lost zero, decimal, scientific, bad length."""
    assert reason in refusal(raw)
    with pytest.raises(InvalidMessageError):
        phones.normalize(raw)


@pytest.mark.parametrize(
    "raw", ["701020304", "7,01020304E+08", "2.25070102E+12", "225501020304"]
)
def test_spreadsheet_damage_is_never_repaired_even_when_converting(raw: str) -> None:
    """A lost zero or scientific notation stays refused with --convert-old-numbers."""
    assert refusal(raw, convert_old=True) == refusal(raw)


def test_old_number_refusal_names_the_option_that_converts() -> None:
    """The reason for an old number tells how to convert it."""
    reason = refusal("07 12 34 56")
    assert reason.startswith("ancien numéro à 8 chiffres (avant 2021)")
    assert "--convert-old-numbers" in reason


# -- the 2021 rule for old eight-digit numbers ----------------------------------------


@pytest.mark.parametrize(("old", "ten"), CONVERSIONS)
def test_convert_old_adds_the_prefix_of_the_2021_rule(old: str, ten: str) -> None:
    """Mobiles by 2nd digit (01/05/07), fixed lines by 3rd digit (21/25/27)."""
    assert phones.convert_old(old) == ten
    number = phonenumbers.parse("+225" + ten)
    assert phonenumbers.is_valid_number(number), "pick a valid example"


@pytest.mark.parametrize("digits", NOT_CONVERTED)
def test_convert_old_leaves_other_inputs_alone(digits: str) -> None:
    """Only eight digits not starting with 1 are converted; else None."""
    assert phones.convert_old(digits) is None


@pytest.mark.parametrize(("raw", "e164", "old"), CONVERTED_READS)
def test_old_numbers_are_converted_on_request_however_written(
    raw: str, e164: str, old: str
) -> None:
    """With convert_old, an old number becomes ten digits and keeps its origin."""
    assert phones.read(raw, convert_old=True) == phones.Phone(e164, "CI", old)


@pytest.mark.parametrize("raw", CONVERTED_BUT_INVALID)
def test_a_conversion_is_checked_again_and_refused_when_invalid(raw: str) -> None:
    """A converted number phonenumbers finds invalid is refused, not queued."""
    digits = raw.replace(" ", "").removeprefix("+225")
    ten = phones.convert_old(digits)
    assert ten is not None and ten.startswith("27")
    assert not phonenumbers.is_valid_number(phonenumbers.parse("+225" + ten))
    reason = refusal(raw, convert_old=True)
    assert reason == "ancien numéro à 8 chiffres sans équivalent valide à 10 chiffres"


@pytest.mark.parametrize("convert", [False, True], ids=["refused", "converting"])
def test_eight_digits_starting_with_1_are_not_an_old_number(convert: bool) -> None:
    """Short and special numbers (first digit 1) did not change in 2021."""
    reason = refusal("10 12 34 56", convert_old=convert)
    assert "ancien numéro" not in reason
    assert reason == "trop court (8 chiffres au lieu de 10)"


def test_converting_leaves_ten_digit_and_foreign_numbers_untouched() -> None:
    """convert_old changes only old numbers: the others have no old_number."""
    assert phones.read("0707123456", convert_old=True).old_number is None
    assert phones.read("+33612345678", convert_old=True).old_number is None


# -- operators -------------------------------------------------------------------------


@pytest.mark.parametrize(("e164", "name"), OPERATORS)
def test_operator_is_named_by_the_ten_digit_prefix(e164: str, name: str | None) -> None:
    """01/21 Moov, 05/25 MTN, 07/27 Orange; others and foreign numbers: None."""
    assert phones.operator(e164) == name


def test_phone_knows_its_operator_and_whether_it_is_a_mobile() -> None:
    """A converted mobile is an Orange mobile; a fixed line is not a mobile."""
    mobile = phones.read("07 12 34 56", convert_old=True)
    fixed = phones.read("20 21 23 45", convert_old=True)
    assert (mobile.operator, mobile.is_mobile) == ("Orange", True)
    assert (fixed.operator, fixed.is_mobile) == ("Orange", False)


# -- no default region (WHATSAPP_DEFAULT_REGION empty) ---------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("0701020304", id="ten-digits"),
        pytest.param("07 01 02 03 04", id="spaced"),
        pytest.param("2250701020304", id="225-without-plus"),
        pytest.param("01020304", id="old-8-digits"),
    ],
)
def test_without_region_a_number_without_country_code_is_refused(raw: str) -> None:
    """The reason names the setting that would let it be read."""
    reason = refusal(raw, None)
    assert "pas d'indicatif pays" in reason
    assert "WHATSAPP_DEFAULT_REGION" in reason
    assert reason == refusal(raw, None, convert_old=True)


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        pytest.param("+2250701020304", AYA, id="e164"),
        pytest.param("+225 07 01 02 03 04", AYA, id="plus-225-spaced"),
        pytest.param("00225 07 01 02 03 04", AYA, id="00225"),
        pytest.param("+33 6 12 34 56 78", "+33612345678", id="foreign"),
    ],
)
def test_without_region_international_numbers_are_still_accepted(
    raw: str, e164: str
) -> None:
    """+225 and 00225 numbers need no default region."""
    assert phones.normalize(raw, None) == e164


def test_without_region_an_old_number_with_plus_225_is_still_old() -> None:
    """+225 and eight digits: refused as old, or converted on request."""
    assert OLD_NUMBER in refusal("+225 07 12 34 56", None)
    found = phones.read("+225 07 12 34 56", None, convert_old=True)
    assert (found.e164, found.old_number) == ("+2250707123456", "07123456")


def test_a_long_text_keeps_a_short_mask() -> None:
    """A bad row's million digits do not make a million-character log line."""
    masked = phones.mask("7" * 1_000_000)
    assert masked == "7777*…(999992)…*7777"
    assert phones.mask("+2250701020304") == "+225******0304"
