# pgAdmin 4 for compose's `pgadmin` service, built without a registry: the same contract as the
# official dpage/pgadmin4 image (the compose file's default), on any Debian-based image.
#
#   docker build -f compose/pgadmin.Dockerfile -t pglab/pgadmin4:8 compose     (from the repo root)
#   LAB_PGADMIN_IMAGE=pglab/pgadmin4:8   (then lab.pgadmin.start(cluster) on the compose backend uses it)
#
# What dpage/pgadmin4 does, this does (compose/pgadmin-entrypoint.sh): pgAdmin 4 from PyPI in
# server mode under gunicorn (1 worker, GUNICORN_THREADS threads) on port 80 inside the container
# (PGADMIN_LISTEN_PORT, PGADMIN_LISTEN_ADDRESS), as the unprivileged user pgadmin (uid 5050), its
# data in /var/lib/pgadmin; at the first start the login from PGADMIN_DEFAULT_EMAIL and
# PGADMIN_DEFAULT_PASSWORD (or PGADMIN_DEFAULT_PASSWORD_FILE), every PGADMIN_CONFIG_<NAME>=<python
# value> as a line `<NAME> = <value>` of /pgadmin4/config_distro.py, and the servers of
# PGADMIN_SERVER_JSON_FILE (default /pgadmin4/servers.json) loaded for that user by pgAdmin's
# `setup.py load-servers`.  /venv/bin/python3 /pgadmin4/setup.py is pgAdmin's command line, as there.
# Not here: postfix (password-reset mails), the PostgreSQL 12-16 client binaries of dpage (the
# base's own /usr/lib/postgresql/*/bin are used when it has them, as the lab's base does).
#
# BASE_IMAGE: any Debian-based image; without python3 (the lab's offline debootstrap base) Debian's
# python3 is installed (the build then needs a Debian mirror).
# PGADMIN_PACKAGES: what pip installs (pgAdmin 8, as dpage/pgadmin4:8; tests/engine/pgadmin_image.py
# reads this default to build the wheels).  PIP_ARGS: extra pip options, e.g. "--no-index
# --find-links http://127.0.0.1:PORT/" when the build has no index to reach.
# The image holds no secret: the login comes from the environment at the first start.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
USER root
ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then \
        apt-get update -q \
     && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 python3-venv ca-certificates \
     && apt-get clean && rm -rf /var/lib/apt/lists/* /var/log/apt/* /var/log/dpkg.log; \
    fi \
 && python3 -m venv /venv \
 && (getent group pgadmin >/dev/null || groupadd --system --gid 5050 pgadmin) \
 && (id pgadmin >/dev/null 2>&1 || useradd --system --uid 5050 --gid pgadmin --home-dir /var/lib/pgadmin \
        --no-create-home --shell /usr/sbin/nologin pgadmin)
ARG PGADMIN_PACKAGES="pgadmin4==8.14 gunicorn==23.0.0"
ARG PIP_ARGS=""
# pgAdmin's own test suites are not needed to run; /pgadmin4 is laid out as in dpage/pgadmin4
RUN /venv/bin/pip install -q $PIP_ARGS $PGADMIN_PACKAGES \
 && pkg="$(/venv/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/pgadmin4" \
 && test -f "$pkg/pgAdmin4.py" \
 && find "$pkg/pgadmin" -type d \( -name tests -o -name regression \) -prune -exec rm -rf {} + \
 && find /venv -name __pycache__ -prune -exec rm -rf {} + \
 && mkdir -p /pgadmin4 /var/lib/pgadmin /run/pgadmin \
 && ln -s "$pkg/pgAdmin4.py" /pgadmin4/pgAdmin4.py \
 && ln -s "$pkg/setup.py" /pgadmin4/setup.py \
 && ln -s "$pkg" /pgadmin4/package \
 && printf 'import builtins\nbuiltins.SERVER_MODE = None\n\nfrom pgAdmin4 import app  # noqa: E402,F401\n' \
        > /pgadmin4/run_pgadmin.py \
 && printf 'import gunicorn\ngunicorn.SERVER_SOFTWARE = "Python"\n' > /pgadmin4/gunicorn_config.py \
 && : > /pgadmin4/config_distro.py \
 && chown pgadmin:pgadmin /pgadmin4/config_distro.py /var/lib/pgadmin /run/pgadmin \
 && chmod 0700 /var/lib/pgadmin
COPY pgadmin-entrypoint.sh /entrypoint.sh
# /pgadmin4 first: its config_distro.py (written at the first start) and a config_local.py mounted there
ENV PATH=/venv/bin:$PATH \
    PYTHONPATH=/pgadmin4:/pgadmin4/package \
    CONFIG_DISTRO_FILE_PATH=/pgadmin4/config_distro.py \
    HOME=/var/lib/pgadmin
USER pgadmin
WORKDIR /pgadmin4
EXPOSE 80 443
ENTRYPOINT ["/entrypoint.sh"]
