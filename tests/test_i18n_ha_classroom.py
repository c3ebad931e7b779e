"""Chapter 08's HA cluster, its experiments and the instructor's classroom speak Spanish when chosen
(lab/ha.py, lab/autofailover.py, lab/classroom.py).  Unit tests: no server."""
from __future__ import annotations

import pandas as pd
import pytest

import lab
import lab.autofailover
import lab.classroom
import lab.ha


def test_ha_arguments_are_refused_in_spanish(spanish, tmp_path):
    with pytest.raises(lab.BadArgument, match="replicas es un número entero de 1 a"):
        lab.ha.up(replicas=0, home=tmp_path, quiet=True)
    with pytest.raises(lab.LabError, match="no hay ningún clúster HA en"):
        lab.ha.attach(tmp_path / "nothing")
    with pytest.raises(lab.BadArgument, match="experimento del capítulo 08"):
        lab.autofailover.crash(None)


def test_the_events_are_named_and_explained_in_spanish(spanish):
    samples = pd.DataFrame(dict(t=[0.0, 0.5, 1.0, 1.5], holder=["pg1", "pg1", None, "pg2"], left_s=[10, 12, None, 20],
                                pg1=[True, True, False, None], pg2=[False, False, False, True]))
    app = pd.DataFrame(dict(outcome=["acknowledged"] * 2, done_at=[0.2, 1.4]))
    events = lab.autofailover._events(samples, app, 0.6, "pg1").set_index("event")
    assert events.loc["nuevo líder elegido", "detail"] == "pg2 tiene la clave"
    assert events.loc["lease caducado", "detail"] == "no hay clave del líder"


def test_the_classroom_says_where_the_class_root_is_in_spanish(spanish, tmp_path):
    with pytest.raises(lab.LabError, match="no hay ninguna clase en .*LAB_CLASS_ROOT"):
        lab.classroom.class_root(tmp_path / "no-class")
