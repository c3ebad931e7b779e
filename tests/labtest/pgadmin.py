"""pgAdmin 4 for the tests that run it (the ``pgadmin`` tier): ``python_or_skip()`` finds it in its
own environment (.venv-pgadmin) or installs it there as ``python -m lab pgadmin --install`` does
(about a minute, once), whichever test file asks first."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import lab
import lab.pgadmin


def python_or_skip() -> Path:
    """pgAdmin's Python; the test skips with the reason where it is missing and cannot be installed
    (no network to PyPI, no venv module; LAB_PGADMIN_INSTALL=0 forbids the install)."""
    python = lab.pgadmin.find_python()
    if python is not None:
        return python
    if os.environ.get("LAB_PGADMIN_INSTALL") == "0":
        pytest.skip("pgAdmin 4 is not installed (LAB_PGADMIN_INSTALL=0: not installing it)")
    try:
        return lab.pgadmin.install(quiet=True)
    except lab.LabError as e:
        pytest.skip(f"pgAdmin 4 is not installed and could not be installed: {str(e).splitlines()[0]}")
