#!/usr/bin/env bash
# Benchmark of the zoo service (release build, this machine):
# - audits per hour with 1 and 2 `zooaudit worker` processes, on SQLite and
#   PostgreSQL, with a warm embedding cache (WARM audits) and with none
#   (--no-cache: every audit embeds everything; COLD audits, SQLite);
# - the queue's own time per audit (the claim; the result and its artifacts
#   committed), as the workers measure it, against the audit's time;
# - wrk on the read API (an audit's JSON, a badge, the dashboard).
#
#   scripts/bench-zoo.sh [WARM] [COLD]      (default 20 4)
#   READ_ONLY=1 scripts/bench-zoo.sh        (only the read API)
#
# The audits: renamed copies of the shared SFace and faceplugin models (the
# same files), each audited against one independent reference on two
# unlabelled face sources and the labelled faces with one trigger (the
# service tests' audit). PostgreSQL: Debian's, a cluster started here (as
# the postgres user when root). Prints markdown tables.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
warm=${1:-20}
cold=${2:-4}
eval "$(scripts/setup.sh --env)"
cargo build --release -q -p zooaudit -p zooaudit-plugin-onnx -p zooaudit-plugin-cosine -p zooaudit-plugin-pairing
bin=${CARGO_TARGET_DIR:-target}/release/zooaudit
work=$root/target/bench-zoo
rm -rf "$work"
mkdir -p "$work/zoo"
faces=$(cd "$root/../shared/zoo/faces/aligned112" && pwd)
models=$(cd "$root/../shared/zoo/models" && pwd)
python3 - "$work/zoo" "$models" "$faces" "$warm" <<'PY'
import sys, pathlib
d, models, faces, n = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
ex = pathlib.Path("examples/shared-zoo")
zoo = 'format_version = "1.1"\nname = "bench zoo"\n'
for k in range((n + 1) // 2):
    for src, old, prefix in [("sface.toml", "sface-2021dec-int8", "sface"), ("faceplugin.toml", "faceplugin-fr-feature", "fp")]:
        name = f"{prefix}-{k:02}"
        t = (ex / src).read_text().replace("../../../shared/zoo/models", models).replace(f'name = "{old}"', f'name = "{name}"')
        (d / f"{name}.toml").write_text(t)
        zoo += f'\n[[model]]\nmanifest = "{name}.toml"\n'
(d / "zoo.toml").write_text(zoo)
(d / "one.toml").write_text('format_version = "1.0"\n[[trigger]]\nname = "large-checkerboard"\nkind = "checkerboard"\ncenter = [0.6, 0.4]\nsize = 0.25\ncells = 4\n')
(d / "audit.toml").write_text(
    'format_version = "1.0"\nzoo = "zoo.toml"\ntriggers = "one.toml"\nseed = 42\n'
    'operating_points = [0.01, 0.05]\nprimary_operating_point = 0.01\nmax_references = 1\n'
    '[detector]\nplugin = "pairing"\ntranslator = "ridge"\n'
    f'[faces]\nunlabeled = ["{faces}/unlabeled/nba", "{faces}/unlabeled/tabler"]\nlabeled = "{faces}/labeled"\n')
PY
audit=$work/zoo/audit.toml
names=()
for k in $(seq 0 $(( (warm + 1) / 2 - 1 ))); do names+=("sface-$(printf %02d "$k")" "fp-$(printf %02d "$k")"); done

# PostgreSQL, as its own user.
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pgdir=$work/pg
mkdir -p "$pgdir"
as_pg=()
if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$pgdir"; as_pg=(runuser -u postgres --); fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${as_pg[@]}" "$pgbin/initdb" -D "$pgdir/data" -U zooaudit -A trust --no-sync -E UTF8 >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -o "-p $port -k $pgdir -c listen_addresses=127.0.0.1" -l "$pgdir/log" -w start >/dev/null
trap '"${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate -w stop >/dev/null 2>&1 || true' EXIT

warm_cache=$work/cache
echo "warming the embedding cache with one audit..." >&2
$bin audit "$audit" --candidate sface-00 --out "$work/warmup" --cache-dir "$warm_cache" >/dev/null 2>&1 || true

# run KIND WORKERS N CACHE-ARGS...: prints one table row.
run() {
  local kind=$1 workers=$2 n=$3
  shift 3
  local url
  case $kind in
    sqlite) url=$work/case-$RANDOM.db ;;
    postgres)
      local name=case$RANDOM
      "$pgbin/createdb" -h 127.0.0.1 -p "$port" -U zooaudit "$name"
      url=postgres://zooaudit@127.0.0.1:$port/$name ;;
  esac
  $bin registry migrate --db "$url" >/dev/null
  for name in "${names[@]:0:$n}"; do
    $bin submit --db "$url" --audit "$audit" --model "$name" >/dev/null
  done
  local start end pids=() logs=()
  start=$(date +%s.%N)
  for w in $(seq "$workers"); do
    local log=$work/worker-$kind-$workers-$w-$RANDOM.log
    logs+=("$log")
    $bin worker --db "$url" --audit "$audit" --until-idle --name "w$w" "$@" 2>"$log" &
    pids+=($!)
  done
  wait "${pids[@]}"
  end=$(date +%s.%N)
  python3 - "$kind" "$workers" "$n" "$start" "$end" "$*" "${logs[@]}" <<'PY'
import sys, re
kind, workers, n, start, end, cache = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
done = audit = queue = 0.0
count = 0
for log in sys.argv[7:]:
    t = open(log).read()
    m = re.search(r"worker done: (\d+) audits done", t)
    done += int(m.group(1))
    m = re.search(r"audits ([\d.]+) s each, queue .*? ([\d.]+) ms each", t)
    k = int(re.search(r"worker done: (\d+)", t).group(1))
    audit += float(m.group(1)) * k
    queue += float(m.group(2)) * k
    count += k
wall = end - start
print(f"| {kind} | {'none (--no-cache)' if 'no-cache' in cache else 'warm'} | {workers} | {int(done)}/{n} | {wall:.1f} | {3600 * done / wall:.0f} | {audit / max(count, 1):.2f} | {queue / max(count, 1):.2f} | {100 * queue / 1e3 / max(audit, 1e-9):.3f} % |")
PY
}

if [ -z "${READ_ONLY:-}" ]; then
echo "| registry | embedding cache | workers | audits done | wall s | audits per hour | audit s (mean) | queue ms per audit | queue / audit |"
echo "|---|---|---|---|---|---|---|---|---|"
for kind in sqlite postgres; do
  for workers in 1 2; do
    run "$kind" "$workers" "$warm" --cache-dir "$warm_cache"
  done
done
for workers in 1 2; do
  run sqlite "$workers" "$cold" --no-cache
done
fi

# The read API under wrk.
if command -v wrk >/dev/null; then
  url=$work/read.db
  $bin registry migrate --db "$url" >/dev/null
  for name in "${names[@]:0:4}"; do $bin submit --db "$url" --audit "$audit" --model "$name" >/dev/null; done
  $bin worker --db "$url" --audit "$audit" --until-idle --cache-dir "$warm_cache" 2>/dev/null
  $bin serve --db "$url" --audit "$audit" --workers 0 --listen 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.err" &
  spid=$!
  for _ in $(seq 100); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
  base=http://$(sed -n 's/^listening on //p' "$work/serve.out")
  id=$(curl -s "$base/v1/audits?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
  sha=$(curl -s "$base/v1/audits/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["candidate_sha256"])')
  echo
  echo "| read API (SQLite, 4 audits; wrk -t2 -c8 -d10s) | requests/s | p50 | p99 | non-2xx |"
  echo "|---|---|---|---|---|"
  for path in "/v1/audits/$id" "/v1/badge/$sha.svg" "/v1/audits/$id/report.json" "/"; do
    out=$(wrk -t2 -c8 -d10s --latency "$base$path" 2>&1)
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
    label=$path
    [ "$path" = "/" ] && label="/ (dashboard)"
    echo "| GET ${label/$id/{id\}} | $rps | $p50 | $p99 | ${non2xx:-0} |" | sed "s/$sha/{sha256}/"
  done
  kill "$spid"
fi
