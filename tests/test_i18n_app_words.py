"""What the lab shows of the crypto app's answers is in the student's language (lab.webapp.app_says):
the app's HTTP API keeps its English contract, and the lab translates each of its fixed sentences."""
from pathlib import Path

import pytest

import lab
from lab.webapp import app_says

REPO = Path(__file__).resolve().parent.parent
APP_SOURCE = (REPO / "app" / "db.py").read_text() + (REPO / "app" / "api.py").read_text()

SAID = {  # what the app says -> what a Spanish student reads
    "replica #2 down": "replica #2 no responde",
    "replica2 down (server closed the connection unexpectedly)":
        "replica2 no responde (server closed the connection unexpectedly)",
    "replica2 has not replayed 0/3C031950; primary has not replayed 0/3C031950":
        "replica2 aún no ha reproducido 0/3C031950; primary aún no ha reproducido 0/3C031950",
    "replica1 down; replica2: canceling statement due to conflict with recovery":
        "replica1 no responde; replica2: canceling statement due to conflict with recovery",
    "the primary does not accept writes (connection refused): retry when it is back or a replica has been promoted":
        "el primario no acepta escrituras (connection refused): reintenta cuando vuelva o cuando se haya "
        "promovido una réplica",
    "no node answered the read: replica #1 down; primary (configured) down":
        "ningún nodo respondió a la lectura: replica #1 no responde; primary (configured) no responde",
    "primary: all 4 connections busy for 2s": "primary: las 4 conexiones ocupadas durante 2 s",
    "unknown symbol XYZ: GET /coins lists the known ones": "símbolo desconocido XYZ: GET /coins lista los conocidos",
}


@pytest.mark.parametrize("said", list(SAID))
def test_english_is_the_apps_own_text(said):
    assert app_says(said) == said


@pytest.mark.parametrize("said,spanish", list(SAID.items()))
def test_spanish_student_reads_the_apps_sentences_in_spanish(said, spanish):
    lab.set_language("es")
    assert app_says(said) == spanish


def test_unknown_text_and_empty_values_pass_through():
    lab.set_language("es")
    assert app_says("") == "" and app_says(None) is None
    assert app_says("replica1: ERROR:  canceling statement") == "replica1: ERROR:  canceling statement"


@pytest.mark.parametrize("fragment", [
    'f"{pool.name} down"', 'f"{pool.name} down ({e})"', 'f"{name} has not replayed {min_lsn}"',
    '"no node answered the read: "', "the primary does not accept writes ({e}): retry when it is back or a replica ",
    "has been promoted", 'connections busy for {BUSY_WAIT_S:.0f}s"', ": GET /coins lists the known ones",
])
def test_the_patterns_are_still_the_apps_words(fragment):
    """When the app's wording changes, lab/webapp.py's _APP_SENTENCES must change with it."""
    assert fragment in APP_SOURCE
