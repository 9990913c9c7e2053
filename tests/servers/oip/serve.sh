#!/usr/bin/env bash
# Start a real Open Inference Protocol v2 (KServe v2) HTTP server (MLServer) serving real face models.
#
#   tests/servers/oip/serve.sh PORT [MODEL...]       MODEL: sface dlib dlib112 (default: all three)
#   tests/servers/oip/serve.sh --setup               only build the venv (scripts/test.sh does)
#
# * Creates, idempotently, a venv at $ZOOAUDIT_OIP_VENV (default <repo>/.zooaudit/oip-venv) from
#   requirements.txt (pip --require-hashes; rebuilt when requirements.txt changes; serialised by flock).
# * Serves HTTP on 127.0.0.1:PORT, in the foreground: the process that runs this script becomes the
#   server (exec), so killing that pid stops it. gRPC listens on 127.0.0.1:$ZOOAUDIT_OIP_GRPC_PORT
#   (default 0: a free port the kernel picks); Prometheus metrics are off unless
#   $ZOOAUDIT_OIP_METRICS_PORT is set. Two servers on different PORTs can run at once.
# * Prints one line to stdout when every chosen model is ready:
#     ZOOAUDIT_OIP_READY http://127.0.0.1:PORT models=sface,dlib
#   (or poll GET /v2/health/ready). MLServer's log lines (stdout) include one per request:
#     ... [mlserver][sface:1] INFO - zooaudit-oip model=sface version=1 batch=32 handling_ms=...
#   and every infer response carries parameters.handling_ms. Uvicorn logs to stderr.
#   Exit: SIGTERM/SIGINT stop it cleanly (rc 0); a port already in use makes it exit with rc 3.
# Model files: ZOOAUDIT_OIP_SFACE_MODEL (default <repo>/../shared/zoo/models/sface_2021dec_int8bq.onnx),
# ZOOAUDIT_OIP_DLIB_MODEL (default: from the face-recognition-models package). Threads for
# onnxruntime: ZOOAUDIT_OIP_THREADS (default 1). Python: $ZOOAUDIT_OIP_PYTHON (default python3.11,
# else python3; must be CPython 3.11, which the hashed wheels are for).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"

SETUP_ONLY=0
if [ "${1:-}" = "--setup" ]; then
  SETUP_ONLY=1; set -- 0
fi
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 PORT [MODEL...]   (models: sface dlib dlib112; default all)" >&2
  echo "       $0 --setup           (only build the venv)" >&2
  exit 2
fi
PORT="$1"; shift
MODELS=("$@")
[ ${#MODELS[@]} -gt 0 ] || MODELS=(sface dlib dlib112)
for m in "${MODELS[@]}"; do
  [ -f "$HERE/models/$m/model-settings.json" ] || { echo "serve.sh: unknown model '$m' (have: $(ls "$HERE/models" | tr '\n' ' '))" >&2; exit 2; }
done

VENV="${ZOOAUDIT_OIP_VENV:-$REPO/.zooaudit/oip-venv}"
GRPC_PORT="${ZOOAUDIT_OIP_GRPC_PORT:-0}"
METRICS_PORT="${ZOOAUDIT_OIP_METRICS_PORT:-}"
PY="${ZOOAUDIT_OIP_PYTHON:-}"
if [ -z "$PY" ]; then
  if command -v python3.11 >/dev/null 2>&1; then PY=python3.11; else PY=python3; fi
fi

# ---- venv (idempotent) -------------------------------------------------------------------------
REQ="$HERE/requirements.txt"
WANT="$(sha256sum "$REQ" | cut -d' ' -f1)"
STAMP="$VENV/.zooaudit-requirements.sha256"
ensure_venv() {
  if [ -x "$VENV/bin/mlserver" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; then return 0; fi
  echo "serve.sh: building venv $VENV from requirements.txt (about a minute) ..." >&2
  "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "CPython 3.11 needed, got %s" % sys.version' >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --require-hashes --no-deps -r "$REQ" >&2
  "$VENV/bin/python" -c 'import mlserver, onnxruntime, onnx, dlib, PIL, numpy, face_recognition_models' >&2
  echo "$WANT" > "$STAMP"
}
mkdir -p "$(dirname "$VENV")"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$VENV.lock"
  flock 9
  ensure_venv
  flock -u 9
  exec 9>&-
else
  ensure_venv
fi
[ "$SETUP_ONLY" = 0 ] || exit 0

# ---- run directory: settings.json with the ports + the chosen models' settings ----------------
# one folder per server process (PORT.PID); folders of servers that are gone are removed
RUNS="$(dirname "$VENV")/oip-run"
mkdir -p "$RUNS"
for d in "$RUNS"/*.*; do
  [ -d "$d" ] || continue
  pid="${d##*.}"
  if [[ "$pid" =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null; then rm -rf "$d"; fi
done
RUN="$RUNS/$PORT.$$"
rm -rf "$RUN"
mkdir -p "$RUN"
for m in "${MODELS[@]}"; do
  mkdir -p "$RUN/$m"
  cp "$HERE/models/$m/model-settings.json" "$RUN/$m/"
done
"$VENV/bin/python" - "$HERE/settings.json" "$RUN/settings.json" "$PORT" "$GRPC_PORT" "$METRICS_PORT" <<'EOF'
import json, sys
src, dst, http, grpc, metrics = sys.argv[1:6]
s = json.load(open(src))
s.update(host="127.0.0.1", http_port=int(http), grpc_port=int(grpc))
if metrics:
    s.update(metrics_endpoint="/metrics", metrics_port=int(metrics))
else:
    s["metrics_endpoint"] = None
json.dump(s, open(dst, "w"), indent=2)
EOF

# ---- readiness announcer (detached; exits when the server is ready or gone) --------------------
SERVER_PID=$$
MODEL_LIST="$(IFS=,; echo "${MODELS[*]}")"
( "$VENV/bin/python" - "$SERVER_PID" "$PORT" "$MODEL_LIST" <<'EOF' &
import os, sys, time, urllib.request
pid, port, models = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(",")
base = f"http://127.0.0.1:{port}"
def ok(path):
    try:
        with urllib.request.urlopen(base + path, timeout=2) as r:
            return r.status == 200
    except Exception:
        return False
deadline = time.time() + 900
while time.time() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(0)
    if ok("/v2/health/ready") and all(ok(f"/v2/models/{m}/ready") for m in models):
        print(f"ZOOAUDIT_OIP_READY {base} models={','.join(models)}", flush=True)
        sys.exit(0)
    time.sleep(0.2)
EOF
) </dev/null

cd "$RUN"
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
exec "$VENV/bin/mlserver" start "$RUN"
