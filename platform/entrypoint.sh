#!/bin/sh
# The image's command: one role per container. `entrypoint.sh ROLE [ARGS...]`, where ROLE is
# webserver, daemon, code-server or api; `entrypoint.sh healthcheck` checks the role this
# container started (the Dockerfile's HEALTHCHECK). Any other command of the image runs as
# given: Dagster's run launchers start run workers as `dagster api execute_run ...` and the Helm
# chart its code servers as `dagster api grpc ...`, both as arguments to this entrypoint. The
# same commands run outside Docker (tests/test_image.py runs each of them).
set -eu

bind="${MLPLATFORM_BIND:-0.0.0.0}"
workspace="${DAGSTER_WORKSPACE:-workspace.yaml}"
webserver_port="${DAGSTER_WEBSERVER_PORT:-3000}"
grpc_port="${DAGSTER_GRPC_PORT:-4000}"
api_port="${MLPLATFORM_SERVE_PORT:-8000}"
role_file="${TMPDIR:-/tmp}/mlplatform-role"

http_ok() {  # exit 0 when GET $1 answers 200 (the image has Python, not curl)
    python -c 'import sys, urllib.request; sys.exit(urllib.request.urlopen(sys.argv[1], timeout=5).status != 200)' "$1"
}

role="${1:-}"
if [ "$#" -gt 0 ]; then shift; fi
case "$role" in
    webserver | daemon | code-server | api) echo "$role" > "$role_file" ;;
esac
case "$role" in
    webserver)
        exec dagster-webserver -h "$bind" -p "$webserver_port" -w "$workspace" "$@" ;;
    daemon)
        exec dagster-daemon run -w "$workspace" "$@" ;;
    code-server)
        exec dagster api grpc -m mlplatform.definitions -h "$bind" -p "$grpc_port" "$@" ;;
    api)
        exec mlplatform serve --host "${MLPLATFORM_SERVE_HOST:-$bind}" --port "$api_port" "$@" ;;
    healthcheck)
        case "$(cat "$role_file" 2>/dev/null || true)" in
            webserver) http_ok "http://127.0.0.1:$webserver_port/server_info" ;;
            daemon) exec dagster-daemon liveness-check ;;
            code-server) exec dagster api grpc-health-check -p "$grpc_port" ;;
            api) http_ok "http://127.0.0.1:$api_port/v1/health" ;;
            *) echo "healthcheck: no role started in this container ($role_file)" >&2; exit 1 ;;
        esac ;;
    *)
        if [ -n "$role" ] && command -v "$role" >/dev/null 2>&1; then
            exec "$role" "$@"
        fi
        echo "usage: entrypoint.sh webserver|daemon|code-server|api [ARGS...] | healthcheck" \
            "| COMMAND [ARGS...] (a command of the image, e.g. dagster, mlplatform)" >&2
        exit 64 ;;
esac
