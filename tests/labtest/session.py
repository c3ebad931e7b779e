"""What marks this test session, set in the environment before anything imports ``lab``.

- Port claims go to a directory of their own (``LAB_PORT_CLAIMS``), so the end of the session
  can check that none is left (the servers still check the port is really free).
- ``PGLAB_TEST_SESSION=<pytest's pid>`` is inherited by every process the tests start (servers,
  pgAdmin, the app, ``python -m lab``), so the tier guard and the leftovers check tell this
  session's processes from those of anyone else on the machine (another test run included).
- A student's ``LAB_HOME`` is never used; tests choose their backend, the local one by default
  even where Docker runs.
- The lab speaks English (no ``LAB_LANG``, no notebook's ``JPY_SESSION_NAME``): the tests that want
  Spanish choose it themselves; conftest.py puts the language back after each test.
- SIGTERM (``timeout``, CI cancelling a job) is turned into KeyboardInterrupt, so pytest tears
  the fixtures down and stops their servers instead of dying with them running.
"""
from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

SESSION_VAR = "PGLAB_TEST_SESSION"
SESSION = str(os.getpid())
CLAIMS = Path(tempfile.mkdtemp(prefix="pglab-test-claims-"))

os.environ["LAB_PORT_CLAIMS"] = str(CLAIMS)
os.environ[SESSION_VAR] = SESSION
os.environ.pop("LAB_HOME", None)
os.environ.pop("LAB_LANG", None)
os.environ.pop("JPY_SESSION_NAME", None)
os.environ.setdefault("LAB_BACKEND", "local")


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _interrupt)
