"""Port claims shared by several Unix users (a class on one server, hub/README.md): one sticky
claims directory for every student, where a stale claim of another user cannot be removed.

These run a claimer as an unprivileged user, so they need root; no server is started."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from lab.system import ports

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a claimer as another Unix user")

CLAIMER = """
import json, sys
from lab.system import ports
port, owner = int(sys.argv[1]), sys.argv[2]
print(json.dumps({"claim": ports.claim(port, owner),
                  "free": ports.claim_free_ports(1, owner, preferred=[port]),
                  "mine": ports.claims_of(owner)}))
"""


@pytest.fixture
def shared_dir():
    """A claims directory as the hub makes it: sticky and writable by all, where every user can reach it."""
    d = Path(tempfile.mkdtemp(prefix="pglab-shared-claims-", dir="/var/tmp"))
    os.chmod(d, 0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


OTHER_UID = 54321  # a uid no claimer here runs as


def _nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' to claim as")


def _python_for_others() -> "tuple[str, dict]":
    """An interpreter another user can run that imports the lab: this one, or (a virtualenv whose
    interpreter lives under /root) the system's Python of the same version with this environment's
    packages and the repository on its path."""
    if all(os.stat(p).st_mode & 0o001 for p in Path(os.path.realpath(sys.executable)).parents):
        return sys.executable, {}
    exe = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
    if not os.path.exists(exe):
        pytest.skip(f"this interpreter is out of other users' reach and there is no {exe}")
    site = sysconfig.get_paths()["purelib"]
    return exe, {"PYTHONPATH": os.pathsep.join([site, str(Path(ports.__file__).parents[2])])}


def _claim_as(user: pwd.struct_passwd, claims: Path, port: int, owner: str) -> dict:
    exe, extra = _python_for_others()
    env = dict(os.environ, LAB_PORT_CLAIMS=str(claims), HOME="/", **extra)
    r = subprocess.run([exe, "-c", CLAIMER, str(port), owner], env=env, capture_output=True,
                       text=True, timeout=60, cwd="/", user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_stale_claim_of_another_user_is_skipped_not_a_crash(shared_dir):
    """Another user's claim whose process is gone is stale, but the sticky bit keeps its file: the
    claimer moves to another port instead of failing with PermissionError."""
    nobody = _nobody()
    port = ports.claim_free_ports(1, "/probe", preferred=None)[0]  # a free port, claimed in the session's dir
    ports.release([port], "/probe")
    stale = shared_dir / f"{port}.json"
    stale.write_text(json.dumps({"lab_home": "/srv/class/homes/alice", "pid": _dead_pid()}))
    os.chmod(stale, 0o644)
    os.chown(stale, OTHER_UID, OTHER_UID)  # another student's file
    out = _claim_as(nobody, shared_dir, port, "/srv/class/homes/bob")
    assert out["claim"] is False
    [other] = out["free"]
    assert other != port
    assert out["mine"] == [other]
    assert json.loads(stale.read_text())["lab_home"] == "/srv/class/homes/alice"
    assert (shared_dir / f"{other}.json").stat().st_uid == nobody.pw_uid


def test_a_stale_claim_of_the_same_user_is_taken_over(shared_dir):
    """The claimer's own stale claim (its file, a lab home of its own that is gone) is removed and taken."""
    nobody = _nobody()
    port = ports.claim_free_ports(1, "/probe")[0]
    ports.release([port], "/probe")
    stale = shared_dir / f"{port}.json"
    stale.write_text(json.dumps({"lab_home": "/srv/class/homes/old", "pid": _dead_pid()}))
    os.chown(stale, nobody.pw_uid, nobody.pw_gid)
    out = _claim_as(nobody, shared_dir, port, "/srv/class/homes/bob")
    assert out["claim"] is True
    assert out["free"] == [port] and out["mine"] == [port]


def test_a_live_claim_of_another_user_is_respected(shared_dir, monkeypatch):
    """A claim whose process runs (this test's, as root) is never taken, by another user either."""
    nobody = _nobody()
    monkeypatch.setenv("LAB_PORT_CLAIMS", str(shared_dir))
    try:
        port = ports.claim_free_ports(1, "/srv/class/homes/alice")[0]
        out = _claim_as(nobody, shared_dir, port, "/srv/class/homes/bob")
        assert out["claim"] is False and out["free"] != [port]
        assert ports.claims_of("/srv/class/homes/alice") == [port]
    finally:
        ports.release_all("/srv/class/homes/alice")
