"""Who runs the PostgreSQL servers.

PostgreSQL refuses to run as root.  As a normal user, the servers run as you.  As
root (CI, some containers) they run as an unprivileged user: ``LAB_SERVER_USER`` if
set, else ``postgres`` if it exists, else a system user ``pglab`` that is created.
"""
from __future__ import annotations

import functools
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..i18n import _
from ..errors import LabHomeError


@dataclass(frozen=True)
class ServerUser:
    name: str
    uid: int
    gid: int

    @property
    def is_me(self) -> bool:
        return self.uid == os.geteuid()

    def run_kwargs(self) -> dict:
        """Extra ``subprocess`` arguments that run a command as this user."""
        if self.is_me:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def chown(self, path: Path, recursive: bool = True) -> None:
        if self.is_me:
            return
        os.chown(path, self.uid, self.gid)
        if recursive and Path(path).is_dir():
            for root, dirs, files in os.walk(path):
                for n in dirs + files:
                    os.chown(os.path.join(root, n), self.uid, self.gid, follow_symlinks=False)

    def can_reach(self, path: Path) -> bool:
        """Can this user traverse into ``path`` (and so into what we give it below)?"""
        if self.is_me:
            return True
        r = subprocess.run(["test", "-x", str(path)], **self.run_kwargs())
        return r.returncode == 0


@functools.lru_cache(maxsize=1)
def server_user() -> ServerUser:
    if os.geteuid() != 0:
        p = pwd.getpwuid(os.geteuid())
        return ServerUser(p.pw_name, p.pw_uid, p.pw_gid)
    name = os.environ.get("LAB_SERVER_USER") or ("postgres" if _exists("postgres") else "pglab")
    if not _exists(name):
        useradd = shutil.which("useradd")
        if not useradd:
            raise LabHomeError(
                _("running as root and the user {name!r} does not exist: create an unprivileged user "
                  "and set LAB_SERVER_USER to it (PostgreSQL refuses to run as root)").format(name=name)
            )
        subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True)
    p = pwd.getpwnam(name)
    if p.pw_uid == 0:
        raise LabHomeError(_("LAB_SERVER_USER={name} is root: PostgreSQL refuses to run as root; "
                             "name an unprivileged user").format(name=name))
    return ServerUser(p.pw_name, p.pw_uid, p.pw_gid)


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
