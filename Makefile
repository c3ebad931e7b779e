# PostgreSQL Replication Lab
#
#   make setup    .venv + the lab installed (again when pyproject.toml changes) + PostgreSQL >= 13 + etcd and HAProxy for chapter 08 (where they cannot be installed: what to install, as a warning)
#   make lab      start JupyterLab on 127.0.0.1 (notebooks/); make lab LAB_LANG=es: in Spanish (notebooks/es/, JupyterLab's menus too)
#   make test     the full suite CI runs: every test tier (compose, pgAdmin, browser, hub included) and, beside it, every notebook twice under nbval (scripts/test-all.sh)
#   make test-quick  for iterating: unit tests + integration on local servers (no compose, pgAdmin, browser, hub, notebooks); TESTS=tests/test_wal.py for one file
#   make translations  extract the lab's messages, update the Spanish catalog, compile it (then translate what it lists)
#   make down     stop the lab's cluster (data kept)
#   make doctor   diagnose the environment
#   make pgadmin  pgAdmin 4 on 127.0.0.1 with the cluster's nodes (installs it into .venv-pgadmin the first time)
#   make bench    the bring-up benchmark (make bench-failover, make bench-app, make bench-ha, make bench-classroom: the others)
#   make clean    stop and wipe the clusters under .lab/, then remove .lab and .venv

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The notebooks under `make test` get a cluster of their own, never the student's.
NBVAL_LAB_HOME := $(CURDIR)/.lab/nbval

# make test-quick: the tiers it leaves out (markers: pyproject.toml, tests/README.md).  nbval's
# plugin is not loaded (no notebooks here; it costs seconds of start-up).
QUICK_MARKERS := not compose and not pgadmin and not browser and not hub
TESTS ?= tests

# Jupyter refuses to run as root without --allow-root (CI, containers).
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: help setup lab test test-quick translations down doctor bench bench-failover bench-app bench-ha bench-classroom clean pgadmin

help:
	@sed -n 's/^#   make /make /p' $(firstword $(MAKEFILE_LIST))

# Chapter 08 (Patroni over etcd, behind HAProxy) is optional: where etcd or HAProxy cannot be
# installed, set-up says what to install and goes on (chapters 00-07 need neither; chapter 08's
# tests skip with the reason).  Under CI (CI=true), or LAB_REQUIRE_HA=1, it fails instead, so that
# a green run never hides a skipped chapter 08.
LAB_REQUIRE_HA ?= $(if $(filter true 1,$(CI)),1,0)

setup: $(STAMP)
	@bash scripts/ensure-postgres.sh
	@bash scripts/ensure-ha.sh || { \
	  if [ '$(LAB_REQUIRE_HA)' = 1 ]; then echo "make setup: etcd and HAProxy are required here (CI or LAB_REQUIRE_HA=1)" >&2; exit 1; fi; \
	  echo "make setup: only chapter 08 (automatic failover) needs them; chapters 00-07 are ready" >&2; }

# The virtual environment itself (a venv without pip is a failed one: make it again).
$(VENV)/bin/pip:
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python >= 3.10" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { \
	  echo "the lab needs Python >= 3.10; $(PYTHON) is $$($(PYTHON) -V 2>&1) (set PYTHON=python3.X)" >&2; exit 1; }
	@echo "creating $(VENV) with $$($(PYTHON) -V 2>&1)"
	@if ! $(PYTHON) -m venv $(VENV); then \
	  rm -rf $(VENV); \
	  pyv=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	  echo "" >&2; \
	  echo "'$(PYTHON) -m venv' failed: Python's venv/ensurepip module is missing." >&2; \
	  echo "Install it: sudo apt-get install python3-venv   (Debian/Ubuntu; for this Python: python$$pyv-venv)" >&2; \
	  echo "or use conda instead: conda env create -f environment.yml" >&2; \
	  exit 1; \
	fi

# Install the project only when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml | $(VENV)/bin/pip
	$(VENV)/bin/pip install --disable-pip-version-check -e '.[test,hub]'
	@touch $@

# make lab LAB_LANG=es (or LAB_LANG=es in the environment): the lab speaks Spanish in every kernel,
# JupyterLab's own menus too (its language pack, installed into .venv the first time, chosen in
# settings of its own under .lab/jupyterlab-settings/es), and it opens on notebooks/es/.
LAB_LANG ?=
LAB_LANGS := es
JUPYTER_PACK_es := jupyterlab-language-pack-es-ES
JUPYTER_LOCALE_es := es_ES
lab_lang := $(firstword $(subst _, ,$(subst -, ,$(subst ., ,$(LAB_LANG)))))

lab: setup
	@if [ -n '$(lab_lang)' ] && [ '$(lab_lang)' != en ] && [ -z '$(filter $(lab_lang),$(LAB_LANGS))' ]; then \
	  echo "LAB_LANG=$(LAB_LANG): the lab speaks en (English) or es (español)" >&2; exit 1; fi
ifneq ($(filter $(lab_lang),$(LAB_LANGS)),)
	@$(PY) -c 'import importlib.metadata as m; m.version("$(JUPYTER_PACK_$(lab_lang))")' 2>/dev/null || \
	  $(VENV)/bin/pip install --disable-pip-version-check -q '$(JUPYTER_PACK_$(lab_lang))' || \
	  echo "make lab: JupyterLab's $(lab_lang) language pack did not install (pip install $(JUPYTER_PACK_$(lab_lang))): its menus stay in English, the lab speaks $(lab_lang)" >&2
	@mkdir -p .lab/jupyterlab-settings/$(lab_lang)/@jupyterlab/translation-extension
	@test -f .lab/jupyterlab-settings/$(lab_lang)/@jupyterlab/translation-extension/plugin.jupyterlab-settings || \
	  echo '{"locale": "$(JUPYTER_LOCALE_$(lab_lang))"}' > .lab/jupyterlab-settings/$(lab_lang)/@jupyterlab/translation-extension/plugin.jupyterlab-settings
	@echo 'JupyterLab en 127.0.0.1: abre la URL con el token que aparece abajo; Ctrl-C para pararlo. El clúster sigue en marcha: `make down` lo detiene'
	LAB_LANG=$(lab_lang) JUPYTERLAB_SETTINGS_DIR='$(CURDIR)/.lab/jupyterlab-settings/$(lab_lang)' \
	  $(VENV)/bin/jupyter lab --notebook-dir=notebooks --ip=127.0.0.1 --no-browser $(ALLOW_ROOT) \
	  --LabApp.default_url=/lab/tree/$(lab_lang)/00_start_here.ipynb
else
	@echo 'JupyterLab on 127.0.0.1; open the URL with the token printed below; Ctrl-C to stop. The cluster keeps running: `make down` stops it'
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --ip=127.0.0.1 --no-browser $(ALLOW_ROOT)
endif

test: setup
	@bash scripts/ensure-docker.sh
	@bash scripts/ensure-chromium.sh
	@LAB_REQUIRE_HUB='$(LAB_REQUIRE_HA)' bash scripts/ensure-hub.sh
	NBVAL_LAB_HOME='$(NBVAL_LAB_HOME)' bash scripts/test-all.sh

test-quick: setup
	$(PY) -m pytest -m '$(QUICK_MARKERS)' -p no:nbval --durations=10 $(TESTS)

# No install here: stopping must stay quick and must not need the network.
# The lab's messages in Spanish (lab/i18n.py): extract them from lab/ with Babel, update
# lab/locale/es/LC_MESSAGES/lab.po, compile lab.mo; then translate what it says is missing.
translations: $(STAMP)
	$(PY) scripts/translations.py update
	@$(PY) scripts/translations.py missing || echo "translate these in lab/locale/<lang>/LC_MESSAGES/lab.po (or: $(PY) scripts/translations.py fill es FILE.json), then make translations again"

down doctor:
	@test -x $(PY) || { echo "no $(VENV): run \`make setup\` first" >&2; exit 1; }
	$(PY) -m lab $@

pgadmin: setup
	@test -f .venv-pgadmin/.lab-installed || $(PY) -m lab pgadmin --install
	$(PY) -m lab pgadmin

bench: setup
	$(PY) bench/bringup.py

bench-failover: setup
	$(PY) bench/failover.py --runs 100

bench-app: setup
	$(PY) bench/app.py

bench-ha: setup
	$(PY) bench/ha.py

# A class of 1, 10 and 30 students on a real JupyterHub (root; ~25 min on 2 cores).
bench-classroom: setup
	@bash scripts/ensure-hub.sh
	$(PY) bench/classroom.py --students 1,10,30

# .lab is removed only after its clusters are stopped and wiped.
clean:
	@if [ -d .lab ]; then \
	  if [ ! -x $(PY) ]; then \
	    echo "cannot stop the clusters under .lab without $(VENV): run \`make setup\` and \`make clean\` again (.lab kept)" >&2; \
	    exit 1; \
	  fi; \
	  if [ -d '$(NBVAL_LAB_HOME)' ]; then LAB_HOME='$(NBVAL_LAB_HOME)' $(PY) -m lab down --wipe; fi; \
	  LAB_HOME='$(CURDIR)/.lab' $(PY) -m lab down --wipe; \
	  rm -rf .lab; \
	fi
	rm -rf $(VENV) .venv-pgadmin
