"""Write every spreadsheet of this folder, the same bytes on every run.

    python tests/data/imports/make_files.py [FOLDER]

FOLDER defaults to the folder of this script. Each CSV file is written as
explicit bytes (its encoding, BOM, separator and line endings spelt out
below), the way Excel for Windows or Mac, LibreOffice or a hand-made export
leaves them. Each ``.xlsx`` is built with openpyxl; its document properties
carry a fixed date and its zip entries a fixed timestamp, so that the bytes
do not depend on the day the script runs.

What each file covers and what importing it must give is in ``cases.toml``
(read by ``tests/test_import_files.py``) and, for people, in ``README.md``.
"""

from __future__ import annotations

import codecs
import io
import sys
import zipfile
from collections.abc import Callable, Sequence
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import openpyxl
from openpyxl.writer.excel import ExcelWriter

HERE = Path(__file__).resolve().parent
FIXED_DATE = datetime(2026, 1, 5, 9, 30, 0)  # document properties of every .xlsx
ZIP_TIME = (2026, 1, 5, 9, 30, 0)  # timestamp of every entry of every .xlsx

NBSP = "\u00a0"  # non-breaking space (French number formats)
NNBSP = "\u202f"  # narrow no-break space (macOS, Word)
THIN = "\u2009"  # thin space
APOSTROPHE = "\u2019"  # typographic apostrophe, as Word and macOS type it
EN_DASH = "\u2013"

CRLF, LF, CR = "\r\n", "\n", "\r"


def text_file(
    lines: Sequence[str],
    *,
    encoding: str,
    newline: str,
    bom: bytes = b"",
    final_newline: bool = True,
) -> bytes:
    """Join ``lines`` (already holding their separators and quotes) as bytes."""
    text = newline.join(lines) + (newline if final_newline else "")
    return bom + text.encode(encoding)


# -- CSV and text files --------------------------------------------------------


def same_person_many_ways() -> bytes:
    """Excel for Windows, "CSV UTF-8": BOM, semicolons, CRLF."""
    aya = [
        "07 01 02 03 04",
        "07.01.02.03.04",
        "07-01-02-03-04",
        "(07) 01 02 03 04",
        "+225 07 01 02 03 04",
        "00225 07 01 02 03 04",
        "2250701020304",
        "0701020304",
        f"07{NBSP}01{NBSP}02{NBSP}03{NBSP}04",
        f"07{NNBSP}01{NNBSP}02{NNBSP}03{NNBSP}04",
        '="0701020304"',
        "'0701020304",
        f"+225{THIN}07{THIN}01{THIN}02{THIN}03{THIN}04",
    ]
    lines = ["Nom;Téléphone;Montant"]
    lines += [f"Aya Koné;{number};10 000" for number in aya[:6]]
    lines.append("Bakary Traoré;05 01 02 03 04;20 000")
    lines += [f"Aya Koné;{number};10 000" for number in aya[6:]]
    return text_file(lines, encoding="utf-8", newline=CRLF, bom=codecs.BOM_UTF8)


def old_numbers() -> bytes:
    """A hand-kept list of 8-digit numbers from before 2021: commas, LF."""
    lines = [
        "nom,numero,montant",
        "Adjoua,0707123456,1 000",
        "Aka,01 02 03 04,2 000",
        "Amani,03 12 34 56,3 000",
        "Assi,44 12 34 56,4 000",
        "Bamba,06 12 34 56,5 000",
        "Coulibaly,07 12 34 56,6 000",
        "Diabaté,59 12 34 56,7 000",
        "Ehui,+225 48 12 34 56,8 000",
        "Fofana,22545123456,9 000",
        "Kouassi,20 81 23 45,10 000",
        "Konan,22 00 12 34,11 000",
        "Yao,20 21 23 45,12 000",
        "Touré,+225 30 64 00 00,13 000",
        "Koffi,31 51 23 45,14 000",
    ]
    return text_file(lines, encoding="utf-8", newline=LF)


def lost_zero_and_scientific() -> bytes:
    """Excel for Windows, French: "CSV (séparateur: point-virgule)", cp1252."""
    lines = [
        "Nom;Tél.;Montant",
        "Aya;0701020304;10 000",
        "Bakary;701020304;20 000",
        "Chantal;7,01020304E+08;30 000",
        "Drissa;2.25070102E+12;40 000",
        "Ehouman;+225 501020304;50 000",
        "Fanta;225501020304;60 000",
        "Gnamien;0501020304;70 000",
    ]
    return text_file(lines, encoding="cp1252", newline=CRLF)


def foreign_numbers() -> bytes:
    """A diaspora list typed in English: commas, LF."""
    lines = [
        "Name,Phone Number,Amount",
        "Aya,+225 07 01 02 03 04,10",
        "Marie,+33 6 12 34 56 78,20",
        "Paul,0033 7 81 23 45 67,30",
        "Moussa,+221 77 123 45 67,40",
        "John,+1 (415) 555-2671,50",
        "Amadou,+226 70 12 34 56,60",
        "Pierre,+33 1 23,70",
        "Ousmane,+221 12 345 67,80",
        "Mary,+1 555 0100,90",
        "Kofi,+233 24 123 4567,100",
        "Aya again,2250701020304,10",
    ]
    return text_file(lines, encoding="utf-8", newline=LF)


def utf8_without_bom() -> bytes:
    """LibreOffice or Google Sheets: UTF-8 without BOM, commas, LF; emoji."""
    lines = [
        "nom,Mobile,montant",
        "Koné Aïcha 🌸,0701020304,10 000",
        "Brou Noël,0501020304,20 000",
        "Zoé N'Guessan 👍🏾,0101020304,30 000",
    ]
    return text_file(lines, encoding="utf-8", newline=LF)


def utf8_with_bom() -> bytes:
    """Excel for Mac, "CSV UTF-8": BOM, semicolons, CRLF; emoji."""
    lines = [
        "Nom;WhatsApp;Montant",
        "Adjoua Ahoussou ✨;07 01 02 03 05;5 000",
        "Hervé Gbéhé;05 01 02 03 05;6 500",
        "Ève Kacou 🇨🇮;+225 01 01 02 03 05;7 250",
    ]
    return text_file(lines, encoding="utf-8", newline=CRLF, bom=codecs.BOM_UTF8)


def windows_1252() -> bytes:
    """Excel for Windows, "CSV (séparateur: point-virgule)": œ, €, « », apostrophe."""
    lines = [
        "Nom;N° de téléphone;Libellé",
        f"Cœur d{APOSTROPHE}Or Sàrl;07 01 02 03 06;"
        f"Facture 15 000 € {EN_DASH} échéance 31/12",
        "Gérard Kouadio;05 01 02 03 06;Reçu n° 42 « payé »",
    ]
    return text_file(lines, encoding="cp1252", newline=CRLF)


def latin_1() -> bytes:
    """ISO-8859-1 (an old Linux or PHP export), semicolons, no final newline."""
    lines = [
        "Nom;Numéro;Ville",
        "Françoise Kablan;0701020307;Bouaké",
        "Aimée Dégny;0501020307;Agnibilékrou",
    ]
    return text_file(lines, encoding="latin-1", newline=LF, final_newline=False)


def mac_roman() -> bytes:
    """Excel 2011 for Mac, "CSV (Macintosh)": Mac Roman, CR line endings."""
    lines = [
        "Nom;Portable;Montant",
        "Sébastien Koné;07 01 02 03 08;1 500",
        "Hélène Aka;05 01 02 03 08;2 500",
        "Noël Ébrié;01 01 02 03 08;3 500",
    ]
    return text_file(lines, encoding="mac_roman", newline=CR)


def mac_roman_apostrophes() -> bytes:
    """Mac Roman whose only non-ASCII letters are typographic apostrophes."""
    lines = [
        "Nom;Portable;Montant",
        f"Kouadio N{APOSTROPHE}Guessan;07 01 02 03 22;1 000",
        f"Aya N{APOSTROPHE}Dri;05 01 02 03 22;2 000",
    ]
    return text_file(lines, encoding="mac_roman", newline=CR)


def utf16_unicode_text() -> bytes:
    """Excel, "Texte Unicode (*.txt)": UTF-16 LE with BOM, tabs, CRLF."""
    lines = [
        "Nom\tTéléphone portable\tMontant",
        "Akissi 💐\t07 01 02 03 09\t4 000",
        "Aboubacar Sidiki Diomandé\t05 01 02 03 09\t8 000",
    ]
    return text_file(lines, encoding="utf-16-le", newline=CRLF, bom=codecs.BOM_UTF16_LE)


def excel_sep_line() -> bytes:
    """A ``sep=;`` first line; the header has as many commas as semicolons."""
    lines = [
        "sep=;",
        "Nom, prénoms;GSM;Montant, FCFA",
        "Koffi, Jean;07 01 02 03 10;10 000,50",
        "Yao, Marc;7 01 02 03 11;20 000,00",
        "Kouamé, Luc;05 01 02 03 10;30 000,00",
    ]
    return text_file(lines, encoding="utf-8", newline=CRLF)


def lines_quoted_whole() -> bytes:
    """Each line quoted whole, as some tools "protect" the semicolons."""
    lines = [
        '"telephone;nom"',
        '"0701020304;Aya"',
        '"0501020304;Bakary"',
    ]
    return text_file(lines, encoding="utf-8", newline=CRLF)


def quoted_fields_with_breaks() -> bytes:
    """Quoted cells holding commas and line breaks (Alt+Entrée: LF in CRLF)."""
    lines = [
        "nom,adresse,Phone,montant",
        '"Koffi, Jean","Rue 12\nCocody",0701020312,10 000',
        'Aya,"Lot 5, Riviera",0701020313,5 000',
        '"Drissa\nKoné",Marcory,0701020314,7 000',
        'Fanta,"Treichville ""Gare""",701020315,1 000',
        "Gnamien,Yopougon,0501020312,2 000",
    ]
    return text_file(lines, encoding="utf-8", newline=CRLF)


def blank_and_trailing_lines() -> bytes:
    """Blank lines, ``;;;`` lines Excel leaves, no newline after the last."""
    lines = [
        "  TÉLÉPHONE  ;Prénom;Montant;Commentaire",
        "0701020316;Aya;1 000;",
        "",
        "0501020316;Bakary;2 000;client fidèle",
        ";;;",
        "70102031;Chantal;3 000;",
        "0101020316;Drissa;4 000;",
        "",
        ";;;",
        ";;;",
        ";;;",
    ]
    return text_file(lines, encoding="utf-8", newline=LF, final_newline=False)


def unknown_phone_header() -> bytes:
    lines = [
        "Nom;Destinataire;Montant",
        "Aya;0701020317;1 000",
        "Bakary;0501020317;2 000",
    ]
    return text_file(lines, encoding="utf-8", newline=CRLF)


def single_column() -> bytes:
    """Only numbers, one per line: a value holding a comma is still one value."""
    lines = [
        "Téléphone",
        "07 01 02 03 23",
        "7,01020323E+08",
        "05 01 02 03 23",
    ]
    return text_file(lines, encoding="utf-8", newline=CRLF)


def two_phone_columns() -> bytes:
    lines = [
        "Nom;Tel fixe;Tel mobile;Montant",
        "Aya;27 22 44 55 66;07 01 02 03 18;1 000",
        "Bakary;21 24 00 11 22;05 01 02 03 18;2 000",
    ]
    return text_file(lines, encoding="utf-8", newline=CRLF)


def template_parameters() -> bytes:
    """Parameters in named columns, in another order than the template's."""
    lines = [
        "montant;nom;telephone;ville",
        "10 000;Aya;0701020319;Abidjan",
        ";Bakary;0501020319;Bouaké",
        "5 000;Chantal;0101020319;Daloa;Man",
        "7 500;Drissa;0701020320",
        "2 000;Ehouman",
        "3 000;;0501020320;Man",
        "1 000;Fanta;0701020321;San-Pédro;",
        "4 000;Gnamien;;Korhogo",
    ]
    return text_file(lines, encoding="utf-8", newline=CRLF, bom=codecs.BOM_UTF8)


def refused_values() -> bytes:
    """Cells no message can be made of, and numbers no one can dial once.

    Formula errors as French-language Excel writes them (``#N/A``,
    ``#DIV/0!``), an invisible control character, more than four spaces in
    a row, a name longer than a template parameter may be, an empty name,
    two numbers in one cell, a number turned into a decimal, and eight
    digits starting with 1 (a short number, not an old one).
    """
    lines = [
        "telephone;nom;montant",
        "0701020330;Aya;10 000",
        "0501020330;#N/A;20 000",
        "0101020330;Bakary;#DIV/0!",
        "0701020331;Chan\x0btal;5 000",
        "0501020331;Drissa     Koné;6 000",
        "0101020331;" + "Ehouman " * 128 + "X;7 000",
        "0701020332;;8 000",
        "07 01 02 03 33 / 05 01 02 03 33;Fanta;9 000",
        "2250701020334.0;Gnamien;1 000",
        "10 12 34 56;Hawa;2 000",
        "0501020335;Ibrahim;3 000",
    ]
    return text_file(lines, encoding="utf-8", newline=CRLF)


# -- xlsx ----------------------------------------------------------------------


def workbook_bytes(fill: Callable[[Any], None]) -> bytes:
    """An .xlsx whose first sheet ``fill`` writes, with fixed dates inside."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Feuil1"
    fill(sheet)
    props = workbook.properties
    props.creator = "Service client"
    props.lastModifiedBy = "Service client"
    props.created = FIXED_DATE
    props.modified = FIXED_DATE
    raw = io.BytesIO()
    # ExcelWriter, not workbook.save(): save() stamps "modified" with now.
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
        ExcelWriter(workbook, archive).write_data()
    return repack(raw.getvalue())


def repack(data: bytes) -> bytes:
    """The same zip with a fixed timestamp and attributes on every entry."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for entry in source.infolist():
            fixed = zipfile.ZipInfo(entry.filename, date_time=ZIP_TIME)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.create_system = 3
            fixed.external_attr = 0o644 << 16
            target.writestr(fixed, source.read(entry.filename))
    return out.getvalue()


def excel_workbook() -> bytes:
    """Row 1 empty; numbers as text and as numbers; dates, decimals, times."""

    def fill(sheet: Any) -> None:
        rows: list[tuple[int, list[Any]]] = [
            (2, ["Nom", "Numéro WhatsApp", "Montant", "Échéance", "Heure"]),
            (3, ["Aya", "07 01 02 03 04", 10000, datetime(2026, 12, 24), time(8, 30)]),
            (
                4,
                [
                    "Bakary",
                    2250501020304,
                    15000.5,
                    datetime(2026, 12, 31, 8, 30),
                    time(9, 0),
                ],
            ),
            (5, ["Chantal", 701020305, 20000, date(2027, 1, 15), time(10, 0)]),
            (6, ["Drissa", 2250101020304.0, 25000, date(2027, 1, 15), time(11, 0)]),
            (7, ["Ehouman", "+225 07 01 02 03 06", "12 500", "fin janvier", "midi"]),
            # row 8 left empty
            (9, ["Fanta", 2250701020304, 30000, date(2027, 2, 1), time(14, 15)]),
        ]
        for number, values in rows:
            for column, value in enumerate(values, 1):
                cell = sheet.cell(row=number, column=column, value=value)
                if isinstance(value, datetime | date):
                    cell.number_format = "dd/mm/yyyy"
                elif isinstance(value, time):
                    cell.number_format = "hh:mm"

    return workbook_bytes(fill)


FILES: dict[str, Callable[[], bytes]] = {
    "meme-personne-13-ecritures.csv": same_person_many_ways,
    "anciens-numeros-8-chiffres.csv": old_numbers,
    "zero-perdu-notation-scientifique.csv": lost_zero_and_scientific,
    "numeros-etrangers.csv": foreign_numbers,
    "utf8-sans-bom-emoji.csv": utf8_without_bom,
    "utf8-bom-excel-mac.csv": utf8_with_bom,
    "windows-1252-excel-pc.csv": windows_1252,
    "latin-1-sans-fin-de-ligne.csv": latin_1,
    "mac-roman-excel-2011.csv": mac_roman,
    "mac-roman-apostrophes.csv": mac_roman_apostrophes,
    "texte-unicode-excel.txt": utf16_unicode_text,
    "excel-ligne-sep.csv": excel_sep_line,
    "lignes-entre-guillemets.csv": lines_quoted_whole,
    "guillemets-retours-a-la-ligne.csv": quoted_fields_with_breaks,
    "lignes-vides-et-fin-excel.csv": blank_and_trailing_lines,
    "colonne-telephone-inconnue.csv": unknown_phone_header,
    "deux-colonnes-telephone.csv": two_phone_columns,
    "une-seule-colonne.csv": single_column,
    "parametres-par-colonne.csv": template_parameters,
    "valeurs-refusees.csv": refused_values,
    "classeur-excel.xlsx": excel_workbook,
}


def main(argv: Sequence[str]) -> int:
    folder = Path(argv[0]) if argv else HERE
    folder.mkdir(parents=True, exist_ok=True)
    for name, make in FILES.items():
        (folder / name).write_bytes(make())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
