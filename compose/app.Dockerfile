# The crypto app (app/) as compose's `web-app`: API (FastAPI, :8000, docs at /docs), dashboard
# (Streamlit, :8501) and the price feed, run by compose/app-entrypoint.sh.
#
#   docker build -f compose/app.Dockerfile -t pglab/crypto-app:latest .        (from the repo root)
#   docker compose ... --profile app up -d web-app                              (builds it too)
#
# BASE_IMAGE: any Debian-based image; with Python 3.11 (python:3.11-slim-bookworm, the default)
# it is used as is, without (the lab's offline debootstrap base) Debian's python3 is installed.
# PIP_ARGS: extra pip options, e.g. "--no-index --find-links http://127.0.0.1:PORT/" when the
# build has no index to reach (the test tier's tests/engine/app_image.py serves wheels built on the host).
# The settings come from the environment (APP_*, PG*): the image holds no secret.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
USER root
ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update -q \
     && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 python3-venv \
     && apt-get clean && rm -rf /var/lib/apt/lists/* /var/log/apt/* /var/log/dpkg.log; \
    fi \
 && python3 -m venv /opt/venv \
 && (id app >/dev/null 2>&1 || useradd --system --create-home --home-dir /home/app --shell /usr/sbin/nologin app)
COPY compose/app-requirements.txt /opt/app/requirements.txt
ARG PIP_ARGS=""
# test suites and C headers of the big packages are not needed to run (about 70 MB)
RUN /opt/venv/bin/pip install -q $PIP_ARGS -r /opt/app/requirements.txt \
 && cd /opt/venv/lib/python3*/site-packages \
 && rm -rf pandas/tests numpy/*/tests numpy/tests pyarrow/tests pyarrow/include \
 && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +
COPY app/ /opt/app/app/
COPY compose/app-entrypoint.sh /opt/app/entrypoint.sh
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/app
USER app
WORKDIR /opt/app
EXPOSE 8000 8501
HEALTHCHECK --interval=2s --timeout=3s --retries=60 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
ENTRYPOINT ["/opt/app/entrypoint.sh"]
