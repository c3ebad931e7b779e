"""The core modules' messages (errors.py's argument checks, lsn, cluster, doctor) in Spanish, and the
same English text as before the catalogs.  Unit tests: no server."""
from __future__ import annotations

import importlib

import pytest

import lab
from lab.errors import BadArgument, need_int, need_number, need_str

doctor = importlib.import_module("lab.doctor")  # the module (lab.doctor is also a function)


def _message(call) -> str:
    with pytest.raises(lab.LabError) as e:
        call()
    return str(e.value)


def test_argument_checks_read_the_same_in_english_and_speak_spanish():
    cases = [(lambda: need_int(3.5, "rows", 1, 10), "rows is a whole number from 1 to 10, not 3.5",
              "rows es un número entero de 1 a 10, no 3.5"),
             (lambda: need_number("x", "timeout", 0, None, "seconds"), "timeout is a number of seconds >= 0, not 'x'",
              "timeout es un número de segundos >= 0, no 'x'"),
             (lambda: need_str("", "name", example="'replica1'"), "name is a non-empty string, e.g. 'replica1', not ''",
              "name es una cadena de texto no vacía, p. ej. 'replica1', no ''"),
             (lambda: lab.parse_lsn("zz"), "not an LSN: 'zz' (an LSN is two hex numbers like '0/3000060', as "
              "pg_current_wal_lsn() shows it)", "no es un LSN: 'zz'"),
             (lambda: lab.up(replicas=9), "replicas must be a whole number from 0 to 5, not 9",
              "replicas tiene que ser un número entero de 0 a 5, no 9")]
    for call, english, spanish in cases:
        assert _message(call) == english
    lab.set_language("es")
    for call, english, spanish in cases:
        message = _message(call)
        assert message.startswith(spanish), message
        assert isinstance(BadArgument(message), lab.LabError)


def test_the_doctors_rows_keep_their_english_names_and_show_translated():
    rows = [("PostgreSQL server", True, "16 in /x"), ("lab home", False, "unwritable")]
    assert "lab home" in repr(doctor.Doctor(rows))
    lab.set_language("es")
    text = repr(doctor.Doctor(rows))
    assert "servidor PostgreSQL" in text and "directorio del laboratorio" in text
    assert not doctor.Doctor(rows).ok  # the checks compare the English names, whatever the language


@pytest.mark.parametrize("kind,lo,hi,unit,english", [
    ("int", 1, 10, "", "n is a whole number from 1 to 10, not 'x'"),
    ("int", 1, None, "", "n is a whole number >= 1, not 'x'"),
    ("int", None, 10, "", "n is a whole number <= 10, not 'x'"),
    ("int", None, None, "", "n is a whole number, not 'x'"),
    ("number", 0, 2.5, "seconds", "n is a number of seconds from 0 to 2.5, not 'x'"),
    ("number", 0, None, "seconds", "n is a number of seconds >= 0, not 'x'"),
    ("number", None, 2.5, "seconds", "n is a number of seconds <= 2.5, not 'x'"),
    ("number", None, None, "seconds", "n is a number of seconds, not 'x'"),
    ("number", 0, 2.5, "", "n is a number from 0 to 2.5, not 'x'"),
    ("number", 0, None, "", "n is a number >= 0, not 'x'"),
    ("number", None, 2.5, "", "n is a number <= 2.5, not 'x'"),
    ("number", None, None, "", "n is a number, not 'x'"),
])
def test_each_range_of_an_argument_check_has_its_whole_sentence(kind, lo, hi, unit, english):
    check = (lambda: need_int("x", "n", lo, hi)) if kind == "int" else (lambda: need_number("x", "n", lo, hi, unit))
    assert _message(check) == english
    lab.set_language("es")
    spanish = _message(check)
    assert spanish.startswith("n es un número") and spanish.endswith(", no 'x'")
    assert ("segundos" in spanish) == bool(unit)
