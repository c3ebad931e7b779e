"""The entrypoints' log lines (master/entrypoint.sh, replica/entrypoint.sh, master/init-master.sh) in the
student's language where the lab shows them (node.logs(), lab.failover.rewind_log): lab.commands'
ENTRYPOINT_SAYS is the scripts' `log "..."` lines, their variables as named placeholders."""
import re
from pathlib import Path

import lab
from lab.commands import ENTRYPOINT_SAYS, entrypoint_says

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = [REPO / "master" / "entrypoint.sh", REPO / "replica" / "entrypoint.sh", REPO / "master" / "init-master.sh"]


def _shape(text: str) -> str:
    """The sentence with every shell variable ($X, ${X}, ${X:-y}) or placeholder ({x}) as {}."""
    text = re.sub(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*", "{}", text)
    return re.sub(r"\{\w+\}", "{}", text)


def test_the_list_is_the_scripts_log_lines():
    said = {_shape(m.group(1)) for path in SCRIPTS for m in re.finditer(r'\blog "([^"]*)"', path.read_text())
            if not m.group(1).startswith("run: ")}
    assert said == {_shape(m) for m in ENTRYPOINT_SAYS}


REWIND = """entrypoint[primary]: timeline 1 here, 2 on the primary: this node may have diverged
entrypoint[primary]: rewinding with pg_rewind onto the primary's timeline
entrypoint[primary]: run: pg_rewind --target-pgdata=/x --write-recovery-conf --progress --source-server='host=h'
pg_rewind: Done!
entrypoint[primary]: pg_rewind done: continuing as a standby of 127.0.0.1:31371 (slot primary)
2026-11-30 18:28:49.087 UTC [18428] LOG:  database system is ready to accept read-only connections
"""


def test_english_lines_are_left_as_they_are():
    assert entrypoint_says(REWIND) == REWIND


def test_a_rewind_reads_in_spanish_commands_and_postgresql_lines_as_they_are():
    lab.set_language("es")
    out = entrypoint_says(REWIND).splitlines()
    assert out[0] == "entrypoint[primary]: timeline 1 aquí, 2 en el primario: este nodo puede haber divergido"
    assert out[1] == "entrypoint[primary]: rebobinando con pg_rewind hasta la timeline del primario"
    assert out[2:4] == REWIND.splitlines()[2:4]
    assert out[4] == "entrypoint[primary]: pg_rewind terminado: sigue como standby de 127.0.0.1:31371 (slot primary)"
    assert out[5] == REWIND.splitlines()[5]
    assert entrypoint_says("init-master: creating table test_replication in crypto_db\n") == \
        "init-master: creando la tabla test_replication en crypto_db\n"
