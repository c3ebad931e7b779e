"""JupyterLab's own menus in the class's language (LAB_LANG=es on the hub): the stop hook's
extension (lab/serverhook.py) writes JupyterLab's locale as the student's user setting when they
have none, and every place that names the language pack names the same one.  The live check (a
student's server saying es_ES through its HTTP API) is in tests/test_hub_docker.py."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from jupyterlab_server.settings_utils import get_settings

from engine.hub_image import language_packs, requirements
from lab.serverhook import JUPYTERLAB_LANGUAGES, TRANSLATION_SETTINGS, pack_installed, seed_jupyterlab_locale

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "@jupyterlab/translation-extension:plugin"
PACK = JUPYTERLAB_LANGUAGES["es"][1]
needs_pack = pytest.mark.skipif(not pack_installed(PACK), reason=f"{PACK} is not installed: pip install -e '.[hub]'")


def jupyterlab_locale(settings_dir: Path) -> "str | None":
    """The locale JupyterLab's own server reads from this user-settings directory (jupyterlab_server)."""
    lab_dir = Path(sys.prefix) / "share" / "jupyter" / "lab"
    found, _ = get_settings(str(lab_dir / "settings"), str(lab_dir / "schemas"), str(settings_dir),
                            schema_name=PLUGIN)
    return found["settings"].get("locale")


@needs_pack
@pytest.mark.parametrize("lab_lang", ["es", "es_ES.UTF-8", "ES"])
def test_a_student_without_a_language_gets_the_class_one(tmp_path, lab_lang):
    settings = tmp_path / "user-settings"  # absent, as on a student's first start
    said = seed_jupyterlab_locale(settings, {"LAB_LANG": lab_lang})
    assert "es_ES" in said and "written" in said, said
    assert (settings / TRANSLATION_SETTINGS).read_text() == '{"locale": "es_ES"}\n'
    assert jupyterlab_locale(settings) == "es_ES"
    # the next start finds it there: left as it is
    assert "left as it is" in seed_jupyterlab_locale(settings, {"LAB_LANG": lab_lang})


@needs_pack
def test_a_students_own_choice_is_left_untouched(tmp_path):
    f = tmp_path / TRANSLATION_SETTINGS
    f.parent.mkdir(parents=True)
    mine = '{\n    // chosen in Settings > Language\n    "locale": "en"\n}'
    f.write_text(mine)
    said = seed_jupyterlab_locale(tmp_path, {"LAB_LANG": "es"})
    assert "left as it is" in said, said
    assert f.read_text() == mine
    assert jupyterlab_locale(tmp_path) == "en"


@pytest.mark.parametrize("env", [{}, {"LAB_LANG": ""}, {"LAB_LANG": "en"}, {"LAB_LANG": "en_US.UTF-8"},
                                 {"LAB_LANG": "fr"}], ids=["unset", "empty", "en", "en_US", "fr"])
def test_without_the_class_language_nothing_is_written(tmp_path, env):
    assert seed_jupyterlab_locale(tmp_path / "user-settings", env) is None
    assert not (tmp_path / "user-settings").exists()
    assert jupyterlab_locale(tmp_path / "user-settings") is None


def test_every_place_names_the_same_language_pack():
    """lab/serverhook.py's JUPYTERLAB_LANGUAGES is the one list: the image's Dockerfile installs it,
    the test tier's image builds wheels for it, the hub's environment gets it, and `make lab
    LAB_LANG=es` uses the same pack and locale on a laptop."""
    packs = [pack for _, pack in JUPYTERLAB_LANGUAGES.values()]
    dockerfile = (ROOT / "hub" / "Dockerfile").read_text()
    arg = re.search(r'^ARG LANGUAGE_PACKS="([^"]*)"$', dockerfile, re.M)
    assert arg and arg.group(1).split() == packs, "hub/Dockerfile's ARG LANGUAGE_PACKS default"
    assert "$LANGUAGE_PACKS" in dockerfile
    assert language_packs() == packs and requirements(ROOT)[-len(packs):] == packs
    hub_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["hub"]
    assert set(packs) <= set(hub_extra), "pyproject.toml's [hub] extra"
    makefile = (ROOT / "Makefile").read_text()
    for lang, (locale, pack) in JUPYTERLAB_LANGUAGES.items():
        assert re.search(rf"^JUPYTER_PACK_{lang} := {re.escape(pack)}$", makefile, re.M), "Makefile's pack"
        assert re.search(rf"^JUPYTER_LOCALE_{lang} := {locale}$", makefile, re.M), "Makefile's locale"
