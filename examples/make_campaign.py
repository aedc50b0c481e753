"""Write the demo campaign: a customer file the way Ivorian businesses keep one.

Run ``python examples/make_campaign.py``. It writes, next to itself:

- ``campaign.csv``: 1,200 rows ``nom,telephone,montant`` (UTF-8, commas).
  Phone numbers are current 10-digit mobiles (07 Orange, 05 MTN, 01 Moov)
  written the many ways people type them, plus about 40 rows repeating a
  customer with the number written differently and about 30 unusable numbers
  (pre-2021 8-digit numbers, too short, a typo letter, empty, "n/a", and
  Excel's scientific notation).
- ``sandbox-script.json``: errors the sandbox Graph API answers for a few of
  the file's customers, so the demo shows retries and failures.

The output is the same on every run (``random.Random(2026)``).
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import phonenumbers

HERE = Path(__file__).resolve().parent
CSV_PATH = HERE / "campaign.csv"
SCRIPT_PATH = HERE / "sandbox-script.json"
SEED = 2026  # fixes every draw, so the files never change
ROWS = 1200  # data rows in campaign.csv, header excluded
DUPLICATES = 40  # rows repeating an earlier customer, number written otherwise
INVALID_KINDS = {  # unusable numbers written on purpose, by kind: rows
    "ancien numéro à 8 chiffres": 8,
    "trop court": 6,
    "lettre dans le numéro": 5,
    "vide": 4,
    "n/a": 3,
    "notation scientifique Excel": 4,
}
OPERATORS = {"07": 45, "05": 35, "01": 20}  # mobile prefix: share of customers, %
OLD_PREFIXES = ["07", "08", "09", "05", "06", "01", "02", "03", "47", "57", "77"]

FAMILY_NAMES = [
    "Kouassi", "Konan", "N'Guessan", "Koné", "Traoré", "Bamba", "Ouattara",
    "Yao", "Coulibaly", "Kouadio", "Koffi", "Kouamé", "Yapi", "Aké", "Diabaté",
    "Touré", "Cissé", "Fofana", "Diomandé", "Soro", "Silué", "Tanoh", "Amani",
    "Brou", "Assi", "Gnagne", "Séka", "Dosso", "Sangaré", "Kamagaté", "Zadi",
    "Gueu", "Tapé", "Djédjé", "Obou", "Ahoua", "Yapo", "N'Dri", "Adjé", "Lago",
]  # fmt: skip
GIVEN_NAMES = [
    "Aya", "Yao", "Adjoua", "Mamadou", "Fatoumata", "Sékou", "Salimata",
    "Amenan", "Drissa", "Zoé", "Dédé", "Akissi", "Affoué", "Ahou", "Amoin",
    "Koffi", "Kouamé", "Ibrahim", "Moussa", "Aminata", "Awa", "Mariam",
    "Djénéba", "Siaka", "Inza", "Yacouba", "Bintou", "Adama", "Hervé", "Serge",
    "Christelle", "Désiré", "Élodie", "Félicité", "Hélène", "Noël", "Ange",
    "Jean-Baptiste", "Marie-Josée", "Ghislaine", "Rosine", "Éric", "Arsène",
]  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One line of campaign.csv, with what the generator knows about it."""

    nom: str
    telephone: str  # as written in the file
    montant: str  # FCFA, thousands separated by a space: "15 000"
    e164: str | None = None  # the number it stands for, None when unusable
    kind: str = "valide"  # "valide", "doublon" or an INVALID_KINDS key


def _pairs(national: str, sep: str) -> str:
    """Write a 10-digit number as five pairs joined by ``sep``."""
    return sep.join(national[i : i + 2] for i in range(0, 10, 2))


FORMATS: list[Callable[[str], str]] = [
    lambda n: _pairs(n, " "),  # 07 08 12 34 56
    lambda n: _pairs(n, "."),  # 07.08.12.34.56
    lambda n: n,  # 0708123456
    lambda n: "+225 " + _pairs(n, " "),  # +225 07 08 12 34 56
    lambda n: "+225" + n,  # +2250708123456
    lambda n: "00225 " + n,  # 00225 0708123456
    lambda n: "(+225) " + _pairs(n, "-"),  # (+225) 07-08-12-34-56
]


def is_valid(text: str) -> bool:
    """Tell whether ``text`` holds one valid number once separators go."""
    compact = re.sub(r"[\s.\-()]", "", text)
    if not re.fullmatch(r"(\+|00)?\d+", compact):
        return False
    try:
        number = phonenumbers.parse(compact, "CI")
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number)


def _e164(text: str) -> str:
    """Return the E.164 form of a number already known to be valid."""
    number = phonenumbers.parse(text, "CI")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _national(rng: random.Random, taken: set[str]) -> str:
    """Draw a new valid 10-digit mobile number not drawn before."""
    prefixes, weights = list(OPERATORS), list(OPERATORS.values())
    while True:
        number = rng.choices(prefixes, weights)[0] + f"{rng.randrange(10**8):08d}"
        if number not in taken and is_valid(number):
            taken.add(number)
            return number


def _name(rng: random.Random) -> str:
    """Draw a name written family name first, as Ivorian files do."""
    family = rng.choice(FAMILY_NAMES)
    if rng.random() < 0.08:
        family += "-" + rng.choice(FAMILY_NAMES)
    given = rng.choice(GIVEN_NAMES)
    if rng.random() < 0.15:
        given += " " + rng.choice(GIVEN_NAMES)
    return f"{family} {given}"


def _amount(rng: random.Random) -> str:
    """Draw an amount in FCFA, a multiple of 500, written "15 000"."""
    value = round(rng.lognormvariate(10, 0.7) / 500) * 500
    return f"{min(max(value, 2500), 500000):,}".replace(",", " ")


def _customer(rng: random.Random, taken: set[str]) -> Row:
    """Draw one customer with a valid number in a random format."""
    national = _national(rng, taken)
    written = rng.choice(FORMATS)(national)
    if _e164(written) != "+225" + national:
        raise AssertionError(f"{written!r} does not read as +225{national}")
    return Row(_name(rng), written, _amount(rng), "+225" + national)


def _rewritten(rng: random.Random, row: Row) -> Row:
    """Repeat ``row`` with its number written another way."""
    assert row.e164 is not None
    national = row.e164.removeprefix("+225")
    others = [f(national) for f in FORMATS if f(national) != row.telephone]
    return replace(row, telephone=rng.choice(others), kind="doublon")


def _unusable(rng: random.Random, kind: str) -> str:
    """Write a number of the given unusable kind."""
    national = rng.choice(list(OPERATORS)) + f"{rng.randrange(10**8):08d}"
    if kind == "ancien numéro à 8 chiffres":
        old = rng.choice(OLD_PREFIXES) + f"{rng.randrange(10**6):06d}"
        return " ".join(old[i : i + 2] for i in range(0, 8, 2))
    if kind == "trop court":
        return _pairs(national, " ")[: rng.choice([10, 11, 13])]
    if kind == "lettre dans le numéro":
        position = rng.randrange(3, 10)
        typo = national[:position] + rng.choice("AOIB") + national[position + 1 :]
        return _pairs(typo, " ")
    if kind == "notation scientifique Excel":
        return f"{int(national):.8E}"  # 0708123456 -> 7.08123456E+08
    return "" if kind == "vide" else "n/a"


def _invalid_number(rng: random.Random, kind: str) -> str:
    """Draw unusable numbers of ``kind`` until one is not valid by accident."""
    while is_valid(written := _unusable(rng, kind)):
        pass
    return written


def _invalid_rows(rng: random.Random) -> list[Row]:
    """Draw the rows whose number cannot be used."""
    return [
        Row(_name(rng), _invalid_number(rng, kind), _amount(rng), None, kind)
        for kind, count in INVALID_KINDS.items()
        for _ in range(count)
    ]


def build_rows(rng: random.Random) -> list[Row]:
    """Draw every row of the campaign, in file order."""
    invalid = _invalid_rows(rng)
    taken: set[str] = set()
    unique = ROWS - DUPLICATES - len(invalid)
    customers = [_customer(rng, taken) for _ in range(unique)]
    repeated = [_rewritten(rng, row) for row in rng.sample(customers, DUPLICATES)]
    rows = customers + repeated + invalid
    rng.shuffle(rows)
    return rows


def write_csv(rows: list[Row], path: Path) -> None:
    """Write the rows as campaign.csv."""
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["nom", "telephone", "montant"])
        writer.writerows([r.nom, r.telephone, r.montant] for r in rows)


def build_script(rows: list[Row]) -> dict[str, list[str | int]]:
    """Pick nine customers written once and script the sandbox's answers."""
    counts = Counter(r.e164 for r in rows if r.e164)
    once = [r.e164 for r in rows if r.e164 and counts[r.e164] == 1]
    actions: list[list[str | int]] = [
        [131000, "ok"],  # a transient error, then sent on retry
        [131000, "ok"],
        [131000, "ok"],
        ["always:131026"],  # not on WhatsApp: fails for good
        ["always:131026"],
        ["always:131026"],
        [131000, 131000, 131000],  # transient every time: fails after 3 attempts
        ["always:132000"],  # template parameter count mismatch: fails
        ["hang"],  # no answer in time: outcome unknown, never resent
    ]
    return dict(zip(once[:: len(once) // len(actions)], actions, strict=False))


def write_script(script: dict[str, list[str | int]], path: Path) -> None:
    """Write sandbox-script.json, one recipient a line."""
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in script.items()]
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")


def summary(rows: list[Row], script: dict[str, list[str | int]]) -> str:
    """Describe what was written, one fact a line."""
    kinds = Counter(r.kind for r in rows)
    prefixes = Counter(r.e164[4:6] for r in rows if r.kind == "valide" and r.e164)
    lines = [
        f"{CSV_PATH.name}: {len(rows)} lignes (+ en-tête nom,telephone,montant)",
        f"  clients distincts valides: {kinds['valide']} "
        f"(07: {prefixes['07']}, 05: {prefixes['05']}, 01: {prefixes['01']})",
        f"  doublons (même client, numéro écrit autrement): {kinds['doublon']}",
    ]
    lines += [f"  invalides, {kind}: {kinds[kind]}" for kind in INVALID_KINDS]
    lines.append(f"{SCRIPT_PATH.name}: {len(script)} destinataires scriptés")
    return "\n".join(lines)


def main() -> None:
    """Write both files and print what they hold."""
    rng = random.Random(SEED)
    rows = build_rows(rng)
    script = build_script(rows)
    write_csv(rows, CSV_PATH)
    write_script(script, SCRIPT_PATH)
    print(summary(rows, script))


if __name__ == "__main__":
    main()
