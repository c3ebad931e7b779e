"""Find PostgreSQL's server binaries: one resolver builds every binary's path.

Search order: ``PG_BIN`` / ``PG_CONFIG`` environment variables, ``pg_config
--bindir``, ``PATH``, ``/usr/lib/postgresql/<newest>/bin`` (Debian/Ubuntu), the
active conda environment, then Homebrew's keg-only ``postgresql@N`` and Postgres.app
(macOS).  A candidate counts only if it has every server
tool the lab needs.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..i18n import N_, _
from ..errors import BinariesNotFound, PostgresTooOld

MIN_MAJOR = 13
REQUIRED = ("postgres", "initdb", "pg_ctl", "pg_basebackup", "psql", "pg_isready")

INSTALL_HINT = N_(
    "install the PostgreSQL server (>= 13): `sudo apt-get install postgresql` (Debian/Ubuntu), "
    "`brew install postgresql@16` (macOS), or `conda install -c conda-forge postgresql`; "
    "or point PG_BIN at the directory holding `postgres` and `initdb`"
)


@dataclass(frozen=True)
class PgBinaries:
    bindir: Path
    source: str  # where it was found: "PG_BIN", "pg_config", "PATH", "debian", "conda"
    version: str  # e.g. "15.18"
    major: int

    def path(self, tool: str) -> str:
        """Absolute path of one tool; every subprocess call goes through this."""
        p = self.bindir / tool
        if not p.exists():
            raise BinariesNotFound(_("{tool} is missing from {bindir}: {install_hint}").format(
                tool=tool, bindir=self.bindir, install_hint=_(INSTALL_HINT)))
        return str(p)

    def cmd(self, tool: str, *args) -> list[str]:
        return [self.path(tool), *map(str, args)]

    def env(self, base: "dict | None" = None) -> dict:
        """An environment whose PATH starts with bindir (for the master/ and replica/ scripts)."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.bindir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        env["LANG"] = env["LC_ALL"] = "C"
        return env


def pkglibdir(b: PgBinaries) -> "Path | None":
    """Where the server loads its modules from (``pg_config --pkglibdir``, else the layouts of
    Debian, conda and Homebrew beside ``bindir``): the directory holding ``plpgsql.so``."""
    places = []
    pg_config = b.bindir / "pg_config"
    if pg_config.is_file():
        try:
            out = subprocess.run([str(pg_config), "--pkglibdir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                places.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    places += [b.bindir.parent / "lib", b.bindir.parent / "lib" / "postgresql"]
    return next((d for d in places if (d / "plpgsql.so").exists() or (d / "plpgsql.dylib").exists()), None)


def missing_for_logical(b: PgBinaries) -> list[str]:
    """What chapter 09 (logical decoding) needs beyond the server: ``pg_recvlogical`` and the
    ``test_decoding`` module (contrib).  Empty when both are here."""
    out = []
    if not (b.bindir / "pg_recvlogical").exists():
        out.append(_("pg_recvlogical (not in {bindir})").format(bindir=b.bindir))
    lib = pkglibdir(b)
    if lib is None or not any((lib / f"test_decoding{ext}").exists() for ext in (".so", ".dylib")):
        out.append(_("the contrib module test_decoding (not in {where})").format(
            where=lib or _("the server’s module directory")))
    return out


def _has_server(bindir: Path) -> bool:
    return all((bindir / t).is_file() and os.access(bindir / t, os.X_OK) for t in REQUIRED)


def _pg_config_bindir(pg_config: str) -> "Path | None":
    try:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


def candidates(environ: "dict | None" = None) -> list[tuple[str, Path]]:
    """Every place looked at, in order, as ``(source, bindir)``."""
    env = os.environ if environ is None else environ
    found: list[tuple[str, Path]] = []
    if env.get("PG_BIN"):
        found.append(("PG_BIN", Path(env["PG_BIN"])))
    if env.get("PG_CONFIG"):
        d = _pg_config_bindir(env["PG_CONFIG"])
        if d:
            found.append(("PG_CONFIG", d))
    pgc = shutil.which("pg_config", path=env.get("PATH"))
    if pgc:
        d = _pg_config_bindir(pgc)
        if d:
            found.append(("pg_config", d))
    for tool in ("postgres", "initdb"):
        p = shutil.which(tool, path=env.get("PATH"))
        if p:
            found.append(("PATH", Path(p).resolve().parent))
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted(
            (d for d in debian.iterdir() if re.fullmatch(r"\d+(\.\d+)?", d.name)),
            key=lambda d: tuple(int(x) for x in d.name.split(".")),
            reverse=True,
        )
        found += [("debian", d / "bin") for d in versions]
    conda = env.get("CONDA_PREFIX")
    if conda:
        found.append(("conda", Path(conda) / ("Library/bin" if sys.platform == "win32" else "bin")))
    # Homebrew's versioned formulae are keg-only (not on PATH), and Postgres.app
    for prefix in ("/opt/homebrew/opt", "/usr/local/opt"):
        kegs = [d for d in Path(prefix).glob("postgresql@*") if re.fullmatch(r"postgresql@\d+", d.name)] \
            if Path(prefix).is_dir() else []
        found += [("homebrew", d / "bin") for d in sorted(kegs, key=lambda d: int(d.name.split("@")[1]), reverse=True)]
    found.append(("Postgres.app", Path("/Applications/Postgres.app/Contents/Versions/latest/bin")))
    return found


def server_version(postgres: str) -> str:
    out = subprocess.run([postgres, "--version"], capture_output=True, text=True, timeout=10)
    m = re.search(r"(\d+)(?:\.(\d+))?", out.stdout)
    if out.returncode != 0 or not m:
        raise BinariesNotFound(_("{postgres} --version failed: {output}").format(
            postgres=postgres, output=out.stderr.strip() or out.stdout.strip()))
    return m.group(0)


def find(environ: "dict | None" = None) -> PgBinaries:
    """The first complete set of server binaries; raises with what to install if none."""
    return find_in(candidates(environ))


def find_in(places) -> PgBinaries:
    """The first complete, new-enough set among ``(source, bindir)`` places."""
    too_old = None
    for source, bindir in places:
        if not _has_server(bindir):
            continue
        version = server_version(str(bindir / "postgres"))
        major = int(version.split(".")[0])
        if major < MIN_MAJOR:
            too_old = too_old or (bindir, version)
            continue
        return PgBinaries(bindir=bindir, source=source, version=version, major=major)
    if too_old:
        raise PostgresTooOld(
            _("PostgreSQL {version} at {path} is too old (the lab needs >= {min_major}): {install_hint}").format(
                version=too_old[1], path=too_old[0], min_major=MIN_MAJOR, install_hint=_(INSTALL_HINT))
        )
    raise BinariesNotFound(_("no PostgreSQL server binaries found: {install_hint}").format(
        install_hint=_(INSTALL_HINT)))


@functools.lru_cache(maxsize=1)
def default() -> PgBinaries:
    return find()
