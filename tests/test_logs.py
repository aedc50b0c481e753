"""The log file: the PHP job's Monolog lines, masking, rotation, redaction."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import TOKEN, StartSandbox
from test_sending import (
    LOG_LINE,
    A,
    B,
    C,
    all_finished,
    enqueue_texts,
    log_lines,
    log_to,
    rows,
    running_daemon,
)

from whatsapp_daemon import logs, messages
from whatsapp_daemon.logs import ctx, logger
from whatsapp_daemon.settings import Settings

STAMP = r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] "


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "whatsapp_queue.log"


@pytest.fixture
def logged(log_path: Path) -> Iterator[Callable[[], list[str]]]:
    """Log to a file with the default options; yield a reader of its lines."""
    with log_to(log_path, secret=TOKEN):
        yield lambda: log_lines(log_path)


# -- the format after a real run ------------------------------------------------------


async def test_daemon_run_writes_monolog_lines_in_cycle_order(
    start_sandbox: StartSandbox, make_settings: Callable[..., Settings]
) -> None:
    """Every line is a Monolog line; the cycle reads as the PHP job's did."""
    sandbox = await start_sandbox(script={C: ["always:131026"]})
    settings = make_settings(api_base_url=sandbox.url)
    first, _, _ = enqueue_texts(settings.database_path, A, B, C)

    with log_to(settings.log_path, secret=TOKEN):
        async with running_daemon(settings) as run:
            await run.until(all_finished(settings.database_path), what="the batch")
    lines = log_lines(settings.log_path)

    assert lines
    for line in lines:
        assert re.match(LOG_LINE, line), line
    wamid = rows(settings.database_path)[first]["wamid"]
    success = (
        'whatsapp_queue.INFO: Message envoyé avec succès {"messageId":"'
        + wamid
        + '","recipient":"+225******0304"}'
    )
    assert any(re.match(STAMP + re.escape(success) + "$", x) for x in lines)

    def index(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    assert (
        index("INFO: Démarrage du traitement de la queue WhatsApp")
        < index("INFO: 3 messages en attente")
        < index("INFO: Message envoyé avec succès")
        < index('INFO: Traitement terminé {"processed":3,"success":2,"failed":1}')
    )
    assert sum("Message envoyé avec succès" in x for x in lines) == 2
    assert any(".ERROR: Échec de l'envoi du message" in x for x in lines)


def test_context_is_compact_json_with_accents_kept(
    logged: Callable[[], list[str]],
) -> None:
    """Context JSON has no spaces, keeps key order and writes accents as is."""
    logger.info("Traitement terminé", extra=ctx(processed=2, nom="Aïcha", b=None))
    logger.info("Sans contexte")

    with_context, without = logged()
    assert with_context.endswith(
        'whatsapp_queue.INFO: Traitement terminé {"processed":2,"nom":"Aïcha","b":null}'
    )
    assert without.endswith("whatsapp_queue.INFO: Sans contexte")


# -- masking --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "shown"),
    [
        pytest.param(True, "+225******0304", id="masked-by-default"),
        pytest.param(False, "+2250701020304", id="shown-when-asked"),
    ],
)
def test_recipient_is_masked_unless_asked_otherwise(
    log_path: Path, mask: bool, shown: str
) -> None:
    """Recipients have their middle digits hidden unless masking is off."""
    with log_to(log_path, mask_recipients=mask):
        logger.info("Message envoyé avec succès", extra=ctx(recipient=A))

    [line] = log_lines(log_path)
    assert json.loads(line.split(" succès ", 1)[1]) == {"recipient": shown}


# -- rotation -------------------------------------------------------------------


def test_renamed_log_is_replaced_by_a_new_file(
    log_path: Path, logged: Callable[[], list[str]]
) -> None:
    """After newsyslog renames the file, the next line starts a new one."""
    logger.info("avant la rotation")
    rotated = log_path.with_name("whatsapp_queue.log.0")
    os.rename(log_path, rotated)

    logger.info("après la rotation")

    assert [x.split(": ", 1)[1] for x in logged()] == ["après la rotation"]
    assert [x.split(": ", 1)[1] for x in log_lines(rotated)] == ["avant la rotation"]


# -- the access token -------------------------------------------------------------


def log_token_in_message() -> None:
    logger.error(f"Réponse inattendue : Bearer {TOKEN}")


def log_token_as_argument() -> None:
    logger.error("Réponse inattendue : %s", f"Bearer {TOKEN}")


def log_token_in_context() -> None:
    logger.error("Réponse inattendue", extra=ctx(header=f"Bearer {TOKEN}"))


def log_token_in_exception() -> None:
    try:
        raise RuntimeError(f"request failed with Authorization: Bearer {TOKEN}")
    except RuntimeError:
        logger.exception("Erreur pendant le traitement de la queue")


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(log_token_in_message, id="message"),
        pytest.param(log_token_as_argument, id="argument"),
        pytest.param(log_token_in_context, id="context"),
        pytest.param(log_token_in_exception, id="exception"),
    ],
)
def test_access_token_is_replaced_by_stars(
    logged: Callable[[], list[str]], write: Callable[[], None]
) -> None:
    """The secret given to the log is written as *** wherever it appears."""
    write()

    text = "\n".join(logged())
    assert TOKEN not in text
    assert "Bearer ***" in text


def test_a_token_escaped_by_json_or_cut_short_is_masked_too(log_path: Path) -> None:
    """A token holding a quote and a backslash, as JSON escapes it in the
    context; a long one cut to a value's display length; one added after
    start-up (a new token read from .env)."""
    quoted = 'EAAQuote"Back\\slash12345'
    long = "EAA" + "x9Z" * 80
    renewed = "EAArenewedTOKEN0123456789"
    with log_to(log_path, secret=[quoted, long]):
        logger.error("Échec", extra=ctx(error=f"(#131000) bad token {quoted}"))
        logger.error("Refusé : %s", messages.show(long))
        logs.hide(renewed)
        logger.error("Arrêt", extra=ctx(error=f"Malformed access token {renewed}"))
    text = log_path.read_text(encoding="utf-8")

    for secret in (quoted, long, renewed):
        assert secret[: logs.SECRET_HEAD] not in text, text
    assert json.dumps(quoted)[1:-1] not in text
    assert text.count("***") == 3, text


@pytest.mark.parametrize(
    "shown",
    [
        pytest.param("token {t} x", id="whole"),
        pytest.param("token {t}", id="at-the-end"),
        pytest.param("Malformed access token {head}... (cut)", id="cut-with-dots"),
        pytest.param("token ({head}), retry", id="cut-in-brackets"),
        pytest.param("token …{tail}", id="only-its-end"),
        pytest.param('{{"e": "{escaped}"}}', id="json-escaped"),
        pytest.param('{{"e": "{twice}"}}', id="json-escaped-twice"),
    ],
)
def test_any_twelve_characters_of_a_secret_are_masked(shown: str) -> None:
    """A token holding a quote and a backslash, whole, cut, escaped once or
    twice: nothing of it is left but runs shorter than SECRET_HEAD."""
    token = 'EAAtokSECRETabc"quote\\back1234567890XYZ'
    once = json.dumps(token)[1:-1]
    text = shown.format(
        t=token,
        head=token[:20],
        tail=token[-20:],
        escaped=once,
        twice=json.dumps(once)[1:-1],
    )

    masked = logs.redact(text, [token], "***")

    assert "***" in masked
    for start in range(len(token) - logs.SECRET_HEAD + 1):
        assert token[start : start + logs.SECRET_HEAD] not in masked, masked
    assert all(part in text for part in masked.split("***"))  # nothing else went


def test_a_short_secret_is_masked_only_whole() -> None:
    """A secret shorter than SECRET_HEAD: its beginning alone is a word."""
    assert logs.redact("verify11 verify1 verify11!", ["verify11"], "***") == (
        "*** verify1 ***!"
    )


def test_a_record_utf8_cannot_carry_is_written_escaped_not_lost(
    log_path: Path,
) -> None:
    """Half an emoji, bytes from a BLOB column: the line is still written."""
    with log_to(log_path):
        recipient = b"\xff+2250799887766"
        logger.error("Titre \ud83d", extra=ctx(recipient=recipient, code=b"x"))
        logger.info("Suivante")
    lines = log_lines(log_path)

    assert len(lines) == 2, lines
    assert "Titre \\ud83d" in lines[0]
    assert '"code":"x"' in lines[0]
    assert "0799887" not in lines[0]  # the recipient, from bytes, is masked too


def test_records_below_the_level_are_not_written(log_path: Path) -> None:
    """At INFO, debug detail stays out of the file."""
    with log_to(log_path, level="INFO"):
        logger.debug("Aucun message en attente")
        logger.warning("Nouvelle tentative d'envoi")

    levels = [re.findall(LOG_LINE, line)[0][0] for line in log_lines(log_path)]
    assert levels == ["WARNING"]
