#!/usr/bin/env bash
# Perform the Dockerfile's install and start-up commands in a clean virtual environment, for
# machines without a Docker engine: builder stage (venv, pip 26.0, the runtime group under
# constraints.txt), final stage (the source as the build context sends it, collectstatic with a
# throw-away key), then what compose.yaml runs (migrate, the two reference services, gunicorn
# for HTTP, uvicorn for WebSockets, `run_jobs`, nginx in front when it is installed), the
# HEALTHCHECK commands, /health/ready, /metrics, static files, a WebSocket handshake, and a
# clean exit on SIGTERM.
#
# Usage: scripts/check_image.sh        (make image-check)
#        CHECK_DEPLOY_FAIL_LEVEL=ERROR scripts/check_image.sh   to see past deploy-check warnings
# Needs network access to PyPI (or a pip cache / index configured for pip) and Python >= 3.12.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PIP_VERSION=26.0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-image.XXXXXX")
PIDS=()

log() { printf '\n==> %s\n' "$*"; }
fail() {
    printf '\nFAIL: %s\n' "$*" >&2
    for f in "$WORK"/logs/*.log; do
        [ -f "$f" ] || continue
        printf -- '--- %s (last 30 lines)\n' "$f" >&2
        tail -n 30 "$f" >&2
    done
    exit 1
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    sleep 0.5
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$WORK/logs"
PYTHON=$("$ROOT/scripts/find-python.sh")

# --- builder stage ------------------------------------------------------------------------------
log "builder: venv with $("$PYTHON" -V) and pip $PIP_VERSION"
mkdir -p "$WORK/build"
cp "$ROOT/pyproject.toml" "$ROOT/constraints.txt" "$WORK/build/"
timeout 120 "$PYTHON" -m venv "$WORK/venv"
VENV_PY="$WORK/venv/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
timeout 300 "$VENV_PY" -m pip install --quiet "pip==$PIP_VERSION" >"$WORK/logs/pip.log" 2>&1 ||
    fail "installing pip $PIP_VERSION"
log "builder: pip install -c constraints.txt --group runtime"
(cd "$WORK/build" && timeout 900 "$VENV_PY" -m pip install --quiet -c constraints.txt --group runtime) \
    >>"$WORK/logs/pip.log" 2>&1 || fail "installing the runtime group"
"$VENV_PY" -m pip check || fail "pip check found broken requirements"
"$VENV_PY" -m pip list --format=freeze | wc -l | xargs printf '%s packages installed\n'

# --- final stage: COPY . . with .dockerignore ----------------------------------------------------
log "final: copying the build context (honouring .dockerignore)"
"$PYTHON" - "$ROOT" "$WORK/app" <<'PY'
import fnmatch
import shutil
import sys
from pathlib import Path

root, dest = Path(sys.argv[1]), Path(sys.argv[2])
patterns = [
    line.strip()
    for line in (root / ".dockerignore").read_text().splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def ignored(rel: str) -> bool:
    # Docker semantics for the patterns this project uses: relative to the context root,
    # `**/` matches at any depth, and an ignored directory hides everything below it.
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(prefix.rsplit("/", 1)[-1], pattern[3:]):
                return True
    return False


copied = 0
for path in sorted(root.rglob("*")):
    rel = path.relative_to(root).as_posix()
    if ignored(rel) or path.is_dir():
        continue
    target = dest / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, target)
    copied += 1
print(f"copied {copied} files")
PY
APP="$WORK/app"
cd "$APP"
[ ! -e tests ] && [ ! -e .venv ] && [ ! -e .git ] || fail ".dockerignore let local state into the context"

log "final: collectstatic with a build-only key (DJANGO_ENV=production)"
env DJANGO_ENV=production SECRET_KEY=build-only-collectstatic-key-not-kept ALLOWED_HOSTS=localhost \
    timeout 120 "$VENV_PY" manage.py collectstatic --noinput >"$WORK/logs/collectstatic.log" 2>&1 ||
    fail "collectstatic"
tail -n 1 "$WORK/logs/collectstatic.log"

# --- run time: the image's environment plus what compose.yaml sets -------------------------------
free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
HTTP_PORT=$(free_port)
WS_PORT=$(free_port)
PROXY_PORT=$(free_port)
METERING_PORT=$(free_port)
OVERSIGHT_PORT=$(free_port)
export DJANGO_ENV=production EMBEDDED_SERVICES=false LOG_FORMAT=json PYTHONUNBUFFERED=1
export SECRET_KEY
SECRET_KEY=$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(64))')
export ALLOWED_HOSTS=127.0.0.1,localhost
export DATABASE_URL="sqlite:///$WORK/db.sqlite3"
export METERING_GRPC_ADDRESS="127.0.0.1:$METERING_PORT"
export OVERSIGHT_GRPC_ADDRESS="127.0.0.1:$OVERSIGHT_PORT"
export PORT=$HTTP_PORT

FAIL_LEVEL=${CHECK_DEPLOY_FAIL_LEVEL:-WARNING}
log "manage.py check --deploy --fail-level $FAIL_LEVEL"
timeout 120 "$VENV_PY" manage.py check --deploy --fail-level "$FAIL_LEVEL" || fail "check --deploy"

log "migrate (the compose 'migrate' service) against $DATABASE_URL"
timeout 300 "$VENV_PY" manage.py migrate --noinput >"$WORK/logs/migrate.log" 2>&1 || fail "migrate"
grep -c ' OK$' "$WORK/logs/migrate.log" | xargs printf '%s migrations applied\n'

log "reference services, one per process (the compose 'metering' and 'oversight' services)"
"$VENV_PY" -m reference_services --metering "127.0.0.1:$METERING_PORT" --oversight none \
    >"$WORK/logs/metering.log" 2>&1 &
METERING_PID=$!
PIDS+=("$METERING_PID")
"$VENV_PY" -m reference_services --metering none --oversight "127.0.0.1:$OVERSIGHT_PORT" \
    >"$WORK/logs/oversight.log" 2>&1 &
OVERSIGHT_PID=$!
PIDS+=("$OVERSIGHT_PID")

grpc_healthy() {
    "$VENV_PY" -c "import sys; from grpc_clients.health import check_health; sys.exit(0 if check_health('$1', '$2', timeout=2) else 1)"
}
wait_until() { # seconds, description, command...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || fail "timed out waiting for $what"
        sleep 0.5
    done
    echo "ok: $what"
}
wait_until 30 "metering healthy (compose healthcheck)" \
    grpc_healthy "127.0.0.1:$METERING_PORT" creto.metering.v1.MeteringService
wait_until 30 "oversight healthy (compose healthcheck)" \
    grpc_healthy "127.0.0.1:$OVERSIGHT_PORT" creto.oversight.v1.OversightService

log "gunicorn on 127.0.0.1:$HTTP_PORT (the image's CMD, compose 'web')"
"$WORK/venv/bin/gunicorn" --config config/gunicorn.conf.py --bind "127.0.0.1:$HTTP_PORT" \
    config.wsgi:application >"$WORK/logs/web.log" 2>&1 &
WEB_PID=$!
PIDS+=("$WEB_PID")

log "uvicorn on 127.0.0.1:$WS_PORT (compose 'ws')"
"$WORK/venv/bin/uvicorn" config.asgi:serving_application --factory --host 127.0.0.1 --port "$WS_PORT" \
    --ws websockets-sansio --ws-per-message-deflate false --lifespan off --workers 2 --proxy-headers \
    >"$WORK/logs/ws.log" 2>&1 &
WS_PID=$!
PIDS+=("$WS_PID")

log "manage.py run_jobs (compose 'jobs')"
"$VENV_PY" manage.py run_jobs >"$WORK/logs/jobs.log" 2>&1 &
JOBS_PID=$!
PIDS+=("$JOBS_PID")

http_get() { # url, expected status[, "Header: value"]
    "$VENV_PY" - "$@" <<'PY'
import sys
import urllib.error
import urllib.request

url, expected = sys.argv[1], int(sys.argv[2])
headers = dict([sys.argv[3].split(": ", 1)]) if len(sys.argv) > 3 else {}
try:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
        status, body = response.status, response.read()
except urllib.error.HTTPError as exc:
    status, body = exc.code, exc.read()
sys.stdout.write(body.decode(errors="replace"))
sys.exit(0 if status == expected else 1)
PY
}
ws_handshake() { # port: a WebSocket upgrade of /ws/ answered 101 (stdlib only)
    "$VENV_PY" - "$1" <<'PY'
import base64
import os
import socket
import sys

port = int(sys.argv[1])
key = base64.b64encode(os.urandom(16)).decode()
request = (
    f"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    f"Origin: http://127.0.0.1:{port}\r\n\r\n"
)
with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
    conn.sendall(request.encode())
    status = conn.recv(1024).split(b"\r\n", 1)[0]
print(status.decode(errors="replace"))
sys.exit(0 if b" 101 " in status else 1)
PY
}
BASE="http://127.0.0.1:$HTTP_PORT"
wait_until 60 "HEALTHCHECK of web (scripts/healthcheck.py → /health/live)" "$VENV_PY" scripts/healthcheck.py
wait_until 60 "HEALTHCHECK of ws" env PORT="$WS_PORT" "$VENV_PY" scripts/healthcheck.py
wait_until 30 "/health/ready answers 200" http_get "$BASE/health/ready" 200
http_get "$BASE/health/ready" 200
echo
METRICS=$(http_get "$BASE/metrics" 200) || fail "/metrics"
for family in trading_http_request_duration_seconds_count trading_domain_metrics_up \
    trading_approval_queue_depth trading_outbox_backlog trading_trades_by_status trading_leader; do
    grep -q "^$family" <<<"$METRICS" || fail "/metrics lacks $family"
done
grep -q '^trading_domain_metrics_up 1' <<<"$METRICS" || fail "/metrics: database gauges down"
echo "ok: /metrics exposes the expected families"
# As the TLS-terminating proxy forwards it (production redirects plain HTTP to HTTPS).
http_get "$BASE/static/rest_framework/css/bootstrap.min.css" 200 "X-Forwarded-Proto: https" >/dev/null ||
    fail "whitenoise does not serve the collected static files"
echo "ok: static files served by the WSGI server"
ws_handshake "$WS_PORT" || fail "uvicorn does not accept a WebSocket handshake on /ws/"
echo "ok: WebSocket handshake on uvicorn"
grep -q '"logger": "trading_demo.access"' "$WORK/logs/web.log" ||
    fail "no JSON access-log line in the web server's output"
echo "ok: JSON access log lines on stderr"

# One replica on SQLite, which has no lock to elect with (the PostgreSQL and Redis elections
# of several replicas are proven by tests/ops/test_processes.py).
wait_until 30 "the jobs process leads and runs its jobs" grep -q "Background jobs running" "$WORK/logs/jobs.log"

if command -v nginx >/dev/null; then
    log "nginx with deploy/nginx.conf on 127.0.0.1:$PROXY_PORT (compose 'proxy')"
    mkdir -p "$WORK/nginx"
    sed -e "s/server web:8000/server 127.0.0.1:$HTTP_PORT/" -e "s/server ws:8001/server 127.0.0.1:$WS_PORT/" \
        -e "s/listen 80;/listen 127.0.0.1:$PROXY_PORT;/" "$ROOT/deploy/nginx.conf" >"$WORK/nginx/default.conf"
    cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/logs/nginx.log;
daemon off;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    include $WORK/nginx/default.conf;
}
NGINX
    nginx -c "$WORK/nginx/nginx.conf" -e "$WORK/logs/nginx.log" &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_until 10 "/health/live through the proxy" http_get "http://127.0.0.1:$PROXY_PORT/health/live" 200
    ws_handshake "$PROXY_PORT" || fail "the proxy does not route /ws/ to uvicorn"
    echo "ok: one port: HTTP to gunicorn, /ws/ to uvicorn"
    kill -TERM "$PROXY_PID"
    wait "$PROXY_PID" 2>/dev/null || true
else
    echo "nginx not installed (apt-get install nginx-light): the proxy's routing not checked"
fi

log "SIGTERM: every process exits 0"
stop_and_check() { # pid, name
    kill -TERM "$1"
    local deadline=$((SECONDS + 20)) status
    while kill -0 "$1" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || fail "$2 did not exit within 20 s of SIGTERM"
        sleep 0.2
    done
    wait "$1" && status=0 || status=$?
    [ "$status" -eq 0 ] || fail "$2 exited $status after SIGTERM"
    echo "ok: $2 exited 0"
}
stop_and_check "$WEB_PID" "web (gunicorn)"
stop_and_check "$WS_PID" "ws (uvicorn)"
stop_and_check "$JOBS_PID" "jobs"
stop_and_check "$METERING_PID" "metering"
stop_and_check "$OVERSIGHT_PID" "oversight"

log "image check passed"
