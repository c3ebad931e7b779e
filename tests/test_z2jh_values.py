"""hub/z2jh-values.yaml, the class on Kubernetes (Zero to JupyterHub), checked two ways.

1. Against the chart's own schema: the chart's default values merged with ours, validated by the
   chart's ``values.schema.json`` (as ``helm install`` validates them).  The chart is published at
   hub.jupyter.org/helm-chart, which this machine cannot reach: give it with
   ``LAB_Z2JH_CHART=<jupyterhub-x.y.z.tgz>`` (``helm pull jupyterhub/jupyterhub``) or a directory
   holding its ``values.yaml`` and ``values.schema.json`` (or ``.yaml``); helm's own download
   cache is looked in too.  Without it that test skips and says how.
2. Against this repository, always: the same image, user, lab home and PostgreSQL profile as the
   container spawner (hub/Dockerfile, hub/docker_spawner.py) and the same culling as the one-server
   hub (hub/jupyterhub_config.py), so the file cannot drift from the image it runs.
"""
from __future__ import annotations

import copy
import io
import json
import os
import re
import tarfile
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
VALUES = ROOT / "hub" / "z2jh-values.yaml"
DOCKERFILE = ROOT / "hub" / "Dockerfile"


def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def _from_tgz(path: Path) -> "tuple[dict, dict]":
    with tarfile.open(path) as tar:
        members = {m.name.split("/", 1)[-1]: m for m in tar.getmembers() if m.name.count("/") == 1}

        def read(name):
            m = members.get(name)
            return tar.extractfile(m).read() if m else None

        schema = read("values.schema.json")
        schema = json.loads(schema) if schema else yaml.safe_load(read("values.schema.yaml") or b"null")
        defaults = yaml.safe_load(io.BytesIO(read("values.yaml") or b"{}"))
    if not schema:
        raise ValueError(f"{path} holds no values.schema.json: is it the jupyterhub chart?")
    return defaults, schema


def _from_dir(path: Path) -> "tuple[dict, dict]":
    for name in ("values.schema.json", "values.schema.yaml"):
        if (path / name).is_file():
            schema = yaml.safe_load((path / name).read_text())  # JSON is YAML
            return yaml.safe_load((path / "values.yaml").read_text()), schema
    raise ValueError(f"{path} holds no values.schema.json (or .yaml) beside values.yaml")


def chart() -> "tuple[dict, dict] | None":
    """(the chart's default values, its values schema), or None where the chart is not here."""
    given = os.environ.get("LAB_Z2JH_CHART")
    candidates = [Path(given)] if given else sorted(
        (Path.home() / ".cache" / "helm" / "repository").glob("jupyterhub-*.tgz"))[-1:]
    for path in candidates:
        if path.is_dir():
            return _from_dir(path)
        if path.is_file():
            return _from_tgz(path)
        raise FileNotFoundError(f"LAB_Z2JH_CHART={given}: no such chart file or directory")
    return None


def merged(defaults: dict, ours: dict) -> dict:
    """Helm's merge of user values over the chart's defaults (maps merge; everything else replaces)."""
    out = copy.deepcopy(defaults)
    for k, v in ours.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merged(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def test_the_values_validate_against_the_charts_own_schema():
    found = chart()
    if found is None:
        pytest.skip("the Zero to JupyterHub chart is not on this machine (hub.jupyter.org cannot be reached): "
                    "`helm pull jupyterhub/jupyterhub`, then LAB_Z2JH_CHART=<the .tgz> runs this check")
    defaults, schema = found
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(merged(defaults, values())), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path)) or '<top>'}: {e.message}" for e in errors[:20])


def test_the_schema_check_catches_a_misspelt_key():
    """The check above is not vacuous: a key the chart does not know fails it (where the chart is here)."""
    found = chart()
    if found is None:
        pytest.skip("the chart is not here (see test_the_values_validate_against_the_charts_own_schema)")
    defaults, schema = found
    wrong = values()
    wrong["singleuser"]["memmory"] = {"limit": "1G"}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(merged(defaults, wrong)))


def test_helms_merge_keeps_the_charts_defaults_beside_ours():
    defaults = {"singleuser": {"memory": {"limit": None, "guarantee": "1G"}, "cmd": "x"}, "cull": {"every": 600}}
    out = merged(defaults, {"singleuser": {"memory": {"limit": "1G"}}, "cull": {"every": 300}})
    assert out == {"singleuser": {"memory": {"limit": "1G", "guarantee": "1G"}, "cmd": "x"}, "cull": {"every": 300}}
    assert defaults["singleuser"]["memory"]["limit"] is None  # the chart's own values untouched


def _dockerfile_env() -> dict:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def test_the_pods_run_the_container_spawners_image_as_its_user():
    v = values()["singleuser"]
    text = DOCKERFILE.read_text()
    user = re.search(r"useradd --uid (\d+) --gid (\d+) .*--home-dir (\S+)", text)
    assert user, "hub/Dockerfile no longer creates its user with useradd --uid --gid --home-dir"
    uid, gid, home = int(user.group(1)), int(user.group(2)), user.group(3)
    assert (v["uid"], v["fsGid"], v["storage"]["homeMountPath"]) == (uid, gid, home)
    assert re.search(rf"^USER {uid}:{gid}$", text, re.M)
    assert v["image"]["name"].split("/")[-1] == "singleuser"
    assert v["cmd"] == "jupyterhub-singleuser" and 'CMD ["jupyterhub-singleuser"]' in text
    env = _dockerfile_env()
    # the lab home lives in the student's volume, and the server is sized as in the image
    assert v["extraEnv"]["LAB_HOME"] == env["LAB_HOME"]
    assert v["extraEnv"]["LAB_HOME"].startswith(home.rstrip("/") + "/")
    assert v["extraEnv"]["LAB_PG_PROFILE"] == env["LAB_PG_PROFILE"] == "shared"
    assert v["extraEnv"]["LAB_BACKEND"] == "local"  # no Docker inside a pod
    # the default URL opens a notebook the image's entrypoint puts in the home
    nb = v["defaultUrl"].split("/lab/tree/", 1)[1]
    assert nb.startswith("notebooks/") and (ROOT / nb).is_file()
    assert 'dest="$HOME/notebooks"' in (ROOT / "hub" / "singleuser-entrypoint.sh").read_text()


def _bytes(quantity: str) -> float:
    units = {"K": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    m = re.fullmatch(r"([\d.]+)([KMG]i?)?", str(quantity))
    assert m, f"not a Kubernetes quantity: {quantity!r}"
    return float(m.group(1)) * units.get(m.group(2) or "", 1)


def test_requests_and_limits_are_consistent():
    v = values()["singleuser"]
    assert _bytes(v["memory"]["guarantee"]) <= _bytes(v["memory"]["limit"])
    assert 0 < float(v["cpu"]["guarantee"]) <= float(v["cpu"]["limit"])
    # a primary, a replica, the kernel and the server need more than 300 MB under load
    assert _bytes(v["memory"]["limit"]) >= 512e6


def test_culling_matches_the_one_server_hub():
    cull = values()["cull"]
    config = (ROOT / "hub" / "jupyterhub_config.py").read_text()
    default = re.search(r'LAB_HUB_CULL_TIMEOUT"\s*,\s*(\d+)', config)
    assert default, "hub/jupyterhub_config.py no longer reads LAB_HUB_CULL_TIMEOUT with a default"
    assert cull["enabled"] is True and cull["timeout"] == int(default.group(1))
    assert cull["every"] <= cull["timeout"]


def test_the_class_logs_in_as_on_one_server():
    """NativeAuthenticator, no open sign-up, instructors as admins: as hub/jupyterhub_config.py."""
    hub = values()["hub"]["config"]
    config = (ROOT / "hub" / "jupyterhub_config.py").read_text()
    assert hub["JupyterHub"]["authenticator_class"].lower().startswith("native")
    assert hub["NativeAuthenticator"]["open_signup"] is False and "open_signup = False" in config
    length = re.search(r"minimum_password_length = (\d+)", config)
    assert length and hub["NativeAuthenticator"]["minimum_password_length"] == int(length.group(1))
    assert hub["Authenticator"]["admin_users"]
