#!/bin/bash
# web-app: the crypto app in one container, as the course's web-app ran FastAPI and Streamlit.
#   1. tables and 7 days of history on the primary (retried while the primary does not answer);
#   2. the API on 0.0.0.0:8000 (docs at /docs), the price feed, the dashboard on 0.0.0.0:8501.
# The container lives as long as all three: when one exits, the others are stopped and the
# container exits with its code (`docker logs web-app` says why).  SIGTERM stops all three.
set -u
export APP_API_HOST=0.0.0.0 APP_API_PORT=8000 APP_DASHBOARD_PORT=8501 APP_API_URL=http://127.0.0.1:8000

for attempt in $(seq 1 "${APP_START_ATTEMPTS:-60}"); do
    python -m app simulate --backfill-only && break
    code=$?
    # 2: a bad setting (the message says which); retrying does not help
    if [ "$code" -eq 2 ] || [ "$attempt" -eq "${APP_START_ATTEMPTS:-60}" ]; then
        echo "web-app: could not prepare the tables on the primary (exit $code)" >&2
        exit "$code"
    fi
    sleep 1
done

pids=()
stop() { kill -TERM "${pids[@]}" 2>/dev/null; }
trap stop TERM INT
python -m app api & pids+=($!)
if [ "${APP_FEED:-1}" != 0 ]; then python -m app simulate & pids+=($!); fi
python -m app dashboard --host 0.0.0.0 & pids+=($!)
wait -n
code=$?
stop
wait
exit "$code"
