"""scripts/ensure-ha.sh (make setup, chapter 08) finds etcd and HAProxy where lab.system.hatools does,
and says what to install in hatools' own words.  Unit tests: nothing is installed (LAB_NO_INSTALL=1),
no server is started."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab.system import hatools

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "ensure-ha.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or sys.platform == "win32", reason="needs bash")


def _fake(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{text}'\n")
    path.chmod(0o755)
    return path


def _run(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("bash") or "bash", str(SCRIPT)], env={**env, "LAB_NO_INSTALL": "1"},
                          capture_output=True, text=True, timeout=60)


def _script_finds(env: dict) -> "dict | None":
    r = _run(env)
    if r.returncode != 0:
        assert "chapter 08 needs etcd and HAProxy" in r.stderr, r.stderr
        return None
    found = dict(re.findall(r"^(etcd|HAProxy) \S+: (.+)$", r.stdout, re.M))
    assert found.keys() == {"etcd", "HAProxy"}, r.stdout
    return {"etcd": found["etcd"], "haproxy": found["HAProxy"]}


def _package_finds(env: dict, monkeypatch) -> "dict | None":
    with monkeypatch.context() as m:
        for k in list(os.environ):
            m.delenv(k)
        for k, v in env.items():
            m.setenv(k, v)
        found = {p: hatools.locate(p) for p in ("etcd", "haproxy")}
    return None if None in found.values() else found


@pytest.mark.parametrize("case", ["as-is", "LAB_ETCD", "LAB_HAPROXY", "PATH", "LAB_ETCD-missing", "LAB_HAPROXY-missing"])
def test_ensure_ha_agrees_with_hatools(case, tmp_path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if k not in ("LAB_ETCD", "LAB_HAPROXY")}
    if case == "LAB_ETCD":
        env["LAB_ETCD"] = str(_fake(tmp_path / "etc" / "etcd", "etcd Version: 3.5.9"))
    elif case == "LAB_HAPROXY":
        env["LAB_HAPROXY"] = str(_fake(tmp_path / "hap" / "haproxy", "HAProxy version 2.8.3-1 2023/09/08"))
    elif case == "PATH":
        _fake(tmp_path / "bin" / "etcd", "etcd Version: 3.5.1")
        _fake(tmp_path / "bin" / "haproxy", "HAProxy version 2.4.0")
        env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    elif case == "LAB_ETCD-missing":
        env["LAB_ETCD"] = str(tmp_path / "nonexistent")
    elif case == "LAB_HAPROXY-missing":
        env["LAB_HAPROXY"] = str(tmp_path / "nonexistent")
    found = _package_finds(env, monkeypatch)
    assert _script_finds(env) == found
    if case in ("LAB_ETCD", "LAB_HAPROXY"):
        assert found[case.removeprefix("LAB_").lower()] == env[case]
    if case == "PATH" and Path(sys.executable).parent != tmp_path / "bin":
        assert found == {"etcd": str(tmp_path / "bin" / "etcd"), "haproxy": str(tmp_path / "bin" / "haproxy")}
    if case.endswith("-missing"):
        assert found is None


def test_ensure_ha_reports_versions(tmp_path):
    env = {**os.environ, "LAB_ETCD": str(_fake(tmp_path / "etcd", "etcd Version: 3.5.9")),
           "LAB_HAPROXY": str(_fake(tmp_path / "haproxy", "HAProxy version 2.8.3-1 2023/09/08 - https://haproxy.org/"))}
    r = _run(env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"etcd 3.5.9: {tmp_path / 'etcd'}", f"HAProxy 2.8.3: {tmp_path / 'haproxy'}"]
    assert hatools.version(env["LAB_ETCD"]) == "3.5.9" and hatools.version(env["LAB_HAPROXY"]) == "2.8.3"


def test_ensure_ha_missing_is_one_line_in_hatools_words(tmp_path, monkeypatch):
    """What set-up says for a missing program is hatools.missing()'s line for it, all on one line."""
    env = {**os.environ, "LAB_ETCD": str(tmp_path / "no-etcd"), "LAB_HAPROXY": str(tmp_path / "no-haproxy")}
    r = _run(env)
    assert r.returncode == 1 and r.stdout == ""
    monkeypatch.setenv("LAB_ETCD", env["LAB_ETCD"])
    monkeypatch.setenv("LAB_HAPROXY", env["LAB_HAPROXY"])
    wanted = [line for line in hatools.missing() if line.startswith(("etcd ", "haproxy "))]
    assert len(wanted) == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last == "ensure-ha: chapter 08 needs etcd and HAProxy: " + "; ".join(wanted)
    # the variable that hides the installed program is named first
    assert f"LAB_ETCD={env['LAB_ETCD']} is not an executable program" in r.stderr


def test_ensure_ha_never_installs_with_lab_no_install(tmp_path):
    """LAB_NO_INSTALL=1: apt-get is not run, even as root on Debian.  etcd is hidden by a PATH of only
    the tools the script uses and a fake apt-get/apt-cache that record any call."""
    log = tmp_path / "apt.log"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bash", "dirname", "basename", "sed", "head", "id", "grep", "chmod", "rm"):
        real = shutil.which(tool)
        if real:
            (bindir / tool).symlink_to(real)
    for tool in ("apt-get", "apt-cache"):
        p = bindir / tool
        p.write_text(f"#!/bin/sh\necho {tool} \"$@\" >> {log}\nexit 1\n")
        p.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("LAB_ETCD", "LAB_HAPROXY", "VIRTUAL_ENV", "CONDA_PREFIX")}
    env["PATH"] = str(bindir)
    r = _run(env)
    if hatools.locate("etcd") in (None, "/usr/bin/etcd", "/bin/etcd"):  # hidden by that PATH
        assert r.returncode == 1 and "etcd (the consensus store) not found" in r.stderr, r.stderr
    assert not log.exists(), log.read_text()
