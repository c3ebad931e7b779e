# The HA nodes of chapter 08 as containers (compose/docker-compose.ha.yml, profile ha): the node
# image (compose/Dockerfile, unchanged) plus etcd (Debian's etcd-server and etcd-client), HAProxy
# (Debian's haproxy), Patroni in a venv (/opt/patroni) and iproute2 (tc: the lab adds latency to
# a node's link to etcd).  One image for the three roles:
#   pg-ha1..3   master/patroni-entrypoint.sh (Patroni running PostgreSQL, as postgres)
#   etcd1..3    etcd (as etcd), etcd-auth: compose/ha/etcd-auth.sh (one shot)
#   haproxy     haproxy -f /lab/ha/haproxy.cfg (as haproxy)
#
#   docker build -f compose/ha.Dockerfile -t pglab/postgres-ha:15 .                (from the repo root)
#   docker build ... --build-arg NODE_IMAGE=<the node image, if not pglab/postgres-node:15>
#
# apt-get needs the base's Debian mirror (build with --network host where the engine has no
# default bridge).  PIP_ARGS: extra pip options, e.g. "--no-index --find-links http://127.0.0.1:PORT/"
# when the build has no index to reach (tests/engine/ha_image.py serves wheels built on the host).
# The secrets come from the environment: the image holds none.
ARG NODE_IMAGE=pglab/postgres-node:15
FROM ${NODE_IMAGE}
USER root
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        etcd-server etcd-client haproxy python3 python3-venv iproute2 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/log/apt/* /var/log/dpkg.log \
 && mkdir -p /var/lib/etcd && chown etcd:etcd /var/lib/etcd && chmod 0700 /var/lib/etcd
COPY compose/ha-requirements.txt /opt/patroni-requirements.txt
ARG PIP_ARGS=""
RUN python3 -m venv /opt/patroni \
 && /opt/patroni/bin/pip install -q --no-cache-dir --disable-pip-version-check $PIP_ARGS \
        -r /opt/patroni-requirements.txt \
 && find /opt/patroni -name __pycache__ -prune -exec rm -rf {} + \
 && /opt/patroni/bin/patroni --version && etcd --version | head -1 && haproxy -v | head -1
COPY compose/ha/ /lab/ha/
RUN chmod 0755 /lab/ha/*.sh && chmod 0644 /lab/ha/haproxy.cfg
ENV PATH=/opt/patroni/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1
USER postgres
EXPOSE 5432 8008
# Patroni stops PostgreSQL and gives up its leader key on SIGTERM
STOPSIGNAL SIGTERM
CMD ["/lab/master/patroni-entrypoint.sh"]
