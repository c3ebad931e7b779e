#!/bin/sh
# The single-user container's entrypoint (hub/Dockerfile), run by tini as the student's user:
#   1. the chapter notebooks copied into the student's home on first start; a notebook already
#      there is the student's own work and is never overwritten (a chapter added to the image
#      later is copied the next time);
#   2. the lab home (LAB_HOME, a mount of the class root's homes/<student>) made private;
#   3. exec of the command (jupyterhub-singleuser): it is tini's only child, so the SIGTERM of
#      docker stop or of Kubernetes reaches it, and its stop hook stops the student's clusters.
set -eu
if [ "$(id -u)" = 0 ]; then
    echo "pglab: this image runs as its unprivileged user (uid 1000), not as root; drop --user root" >&2
    exit 1
fi
src="${PGLAB_NOTEBOOKS:-/opt/pglab/notebooks}"
dest="$HOME/notebooks"
mkdir -p "$dest"
for nb in "$src"/*.ipynb; do
    [ -e "$nb" ] || continue
    [ -e "$dest/${nb##*/}" ] || cp "$nb" "$dest/"
done
if [ -n "${LAB_HOME:-}" ]; then
    mkdir -p "$LAB_HOME"
    if ! chmod 0700 "$LAB_HOME" 2>/dev/null; then
        echo "pglab: the lab home $LAB_HOME is not this user's (uid $(id -u)): chown it to $(id -u):$(id -g) on the host" >&2
        exit 1
    fi
fi
exec "$@"
