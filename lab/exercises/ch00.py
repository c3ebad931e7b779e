"""Chapter 00's self-check (start here).

>>> lab.checks.check("00.1", cluster, answer=16)                           # doctest: +SKIP
"""
from __future__ import annotations

import re

from ..i18n import N_, _
from .answers import as_count
from .registry import exercise


@exercise("00.1", N_("which PostgreSQL runs the lab"), answer=True,
          hint=N_("Ask the primary cluster.primary.scalar('SHOW server_version') and answer with its major "
                  "version, e.g. answer=16."))
def _pg_major(cluster, answer):
    major = int(cluster.primary.scalar("SHOW server_version_num", dbname="postgres")) // 10000
    given = as_count(answer)
    if given is None and isinstance(answer, str) and re.fullmatch(r"\s*\d+(\.\d+)*\s*", answer):
        given = int(answer.split(".")[0])
    if given is None:
        return False, _("answer with the major version as a number, e.g. answer=12 (not {answer!r})").format(
            answer=answer)
    if given == major:
        return True, _("right: the lab runs PostgreSQL {major}").format(major=major)
    return False, _("that is not the version the primary reports: ask it with "
                    "cluster.primary.scalar('SHOW server_version')")
