"""The host an engine runs on: its binaries, its Debian mirror, and whether the tier can run.

Nothing here starts anything; ``availability()`` is what the tests and benchmarks ask first.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from lab.backends.compose import compose_cli

from .sweep import cgroup_mounts

# Where docker.io and debootstrap put their binaries, also when PATH lacks the sbin dirs.
SYS_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_APT_PACKAGES = {"dockerd": "docker.io", "docker": "docker.io", "containerd": "containerd",
                 "runc": "runc", "docker-proxy": "docker.io", "docker-compose": "docker-compose",
                 "debootstrap": "debootstrap"}
_DEBIAN_SUITES = {"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
                  "stable", "testing", "unstable", "oldstable"}


class DockerdError(RuntimeError):
    """The private engine could not start, stop cleanly, or build/load its images."""


def say(msg: str) -> None:
    print(f"pglab-dockerd: {msg}", file=sys.stderr, flush=True)


def which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), SYS_PATH]))


def docker_cli() -> str | None:
    """The docker CLI: ``LAB_DOCKER_CLI``, else the one shipped with dockerd (docker.io's
    /usr/bin/docker, same API version), else the first on PATH."""
    env = os.environ.get("LAB_DOCKER_CLI")
    if env:
        return env
    dockerd = which("dockerd")
    if dockerd:
        sibling = Path(dockerd).resolve().parent.parent / "bin" / "docker"
        if sibling.is_file() and os.access(sibling, os.X_OK):
            return str(sibling)
    return which("docker")


def _os_release() -> dict:
    out = {}
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            k, sep, v = line.partition("=")
            if sep:
                out[k.strip()] = v.strip().strip('"')
    return out


def _deb822_entries(text: str) -> list[dict]:
    entries = []
    for para in re.split(r"\n\s*\n", text):
        fields, key = {}, None
        for line in para.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0].isspace() and key:
                fields[key] += " " + line.strip()
                continue
            key, _, val = line.partition(":")
            key = key.strip().lower()
            fields[key] = val.strip()
        if fields.get("enabled", "yes").lower() == "no" or "uris" not in fields:
            continue
        entries.append({"types": fields.get("types", "").split(), "uris": fields["uris"].split(),
                        "suites": fields.get("suites", "").split(),
                        "components": fields.get("components", "").split()})
    return entries


def _one_line_entries(text: str) -> list[dict]:
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        words = re.sub(r"\[[^\]]*\]", " ", line).split()  # drop [arch=... signed-by=...]
        if len(words) >= 3 and words[0] in ("deb", "deb-src"):
            entries.append({"types": [words[0]], "uris": [words[1]], "suites": [words[2]],
                            "components": words[3:]})
    return entries


def _apt_source_entries(etc_apt: Path = Path("/etc/apt")) -> list[dict]:
    """(types, uris, suites, components) of every entry in /etc/apt/sources.list{,.d/*}:
    one-line ``.list`` files and deb822 ``.sources`` files."""
    entries = []
    files = [etc_apt / "sources.list"]
    d = etc_apt / "sources.list.d"
    if d.is_dir():
        files += sorted(d.iterdir())
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            entries += _deb822_entries(text)
        elif f.name == "sources.list" or f.suffix == ".list":
            entries += _one_line_entries(text)
    return entries


def debian_mirror(etc_apt: Path = Path("/etc/apt")) -> str | None:
    """The Debian archive the host's apt uses (``LAB_DEBIAN_MIRROR`` overrides): the first
    ``deb`` entry whose suite is a Debian release name, e.g. http://deb.debian.org/debian.
    Ubuntu's archive has no bookworm: there, set LAB_DEBIAN_MIRROR."""
    env = os.environ.get("LAB_DEBIAN_MIRROR")
    if env:
        return env
    for e in _apt_source_entries(etc_apt):
        if "deb" in e["types"] and "main" in e["components"] and set(e["suites"]) & _DEBIAN_SUITES:
            for uri in e["uris"]:
                if uri.startswith(("http://", "https://", "file:/")):
                    return uri
    return None


def availability() -> tuple[bool, str]:
    """Can the compose tier run here?  (True, what it will use) or (False, why not)."""
    if not sys.platform.startswith("linux"):
        return False, f"a private dockerd needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return False, "a private dockerd needs root (run the tests as root, e.g. in CI)"
    osr = _os_release()
    family = {osr.get("ID", "")} | set(osr.get("ID_LIKE", "").split())
    if not family & {"debian", "ubuntu"}:
        return False, (f"the image build needs Debian or Ubuntu (apt, debootstrap); this is "
                       f"{osr.get('PRETTY_NAME') or 'an unknown system'}")
    missing = [n for n in ("dockerd", "containerd", "runc", "docker-proxy", "debootstrap")
               if not which(n)]
    if not docker_cli():
        missing.append("docker")
    if not compose_cli():  # the lab's own finder: the CLI the compose backend will run
        missing.append("docker-compose")
    if missing:
        pkgs = sorted({_APT_PACKAGES[m] for m in missing})
        return False, (f"missing {', '.join(missing)}: `apt-get install --no-install-recommends "
                       f"{' '.join(pkgs)}` (or run scripts/ensure-docker.sh as root)")
    if not Path("/usr/share/keyrings/debian-archive-keyring.gpg").is_file():
        return False, "debootstrap needs Debian's archive key: `apt-get install debian-archive-keyring`"
    mirror = debian_mirror()
    if not mirror:
        return False, ("no Debian mirror in /etc/apt/sources.list* to debootstrap the image from: "
                       "set LAB_DEBIAN_MIRROR (e.g. to your Debian mirror's /debian URL)")
    if not cgroup_mounts():
        return False, "no cgroup file system is mounted (containers need one)"
    return True, f"private dockerd ({which('dockerd')}), images from {mirror}"


# The host state an engine must leave as it found it (it runs with --iptables=false ...).
SYSCTLS = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/ipv4/conf/all/route_localnet",
           "net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables")


def host_net_state() -> dict:
    """The host's firewall rules (every iptables flavour present) and forwarding sysctls,
    without comments and packet counters, to compare before and after."""
    state = {}
    for tool in ("iptables-save", "ip6tables-save", "iptables-legacy-save", "ip6tables-legacy-save"):
        path = which(tool)
        if not path:
            continue
        r = subprocess.run([path], capture_output=True, text=True, timeout=30)
        state[tool] = [re.sub(r"\[\d+:\d+\]", "", line) for line in r.stdout.splitlines()
                       if line.strip() and not line.startswith("#")]
    for name in SYSCTLS:
        try:
            state[name] = Path("/proc/sys", name).read_text().strip()
        except OSError:
            state[name] = None
    return state


def net_state_changes(before: dict, after: dict) -> list[str]:
    """What differs between two ``host_net_state()`` results, one line per rule set or sysctl."""
    out = []
    for k in sorted(set(before) | set(after)):
        if before.get(k) != after.get(k):
            b, a = before.get(k), after.get(k)
            if isinstance(b, list) and isinstance(a, list):
                out.append(f"{k}: +{sorted(set(a) - set(b))} -{sorted(set(b) - set(a))}")
            else:
                out.append(f"{k}: {b!r} -> {a!r}")
    return out
