#!/usr/bin/env bash
# Load benchmark of `zooaudit guard serve` on loopback with wrk (Debian's
# package): 60 s per concurrency level, POSTing one real aligned face, next
# to the bare inference time of the pair's two models for one image.
#
#   scripts/bench-guard.sh [SECONDS] [CONNECTIONS...]     (default: 60 s; 1 2 4 16)
#
# Needs ../shared/zoo (the shared models and faces). Prints markdown tables.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-60}
shift || true
conns=("$@")
[ ${#conns[@]} -gt 0 ] || conns=(1 2 4 16)
eval "$(scripts/setup.sh --env)"
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq wrk >/dev/null; else sudo apt-get install -y -qq wrk >/dev/null; fi
fi
cargo build --release -q -p zooaudit -p zooaudit-plugin-onnx -p zooaudit-plugin-cosine -p zooaudit-plugin-pairing
bin=${CARGO_TARGET_DIR:-target}/release/zooaudit
work=$root/target/bench-guard
mkdir -p "$work"
face=$root/../shared/zoo/faces/aligned112/labeled/barack_obama/obama.png
$bin pair fit examples/shared-zoo/audit.toml --out "$work/pair.json" --cache-dir "$work/cache" >/dev/null
echo "## Bare inference"
cargo bench -q -p zooaudit-guard --bench inference -- "$work/pair.json" "$face" 300 2>/dev/null
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
local f = io.open("$face", "rb")
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "image/png"
LUA
$bin guard serve "$work/pair.json" --listen 127.0.0.1:0 --concurrency 2 --queue-timeout 30 >"$work/serve.out" 2>"$work/serve.err" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/serve.out")
rss() { awk '/VmRSS/ {print $2/1024}' "/proc/$pid/status"; }
echo
echo "## HTTP load (wrk, ${secs} s per level, server --concurrency 2, $(nproc) cores)"
echo "| connections | requests/s | p50 | p90 | p99 | non-2xx | socket errors | server RSS MiB: before, every 10 s during, after |"
echo "|---|---|---|---|---|---|---|---|"
for c in "${conns[@]}"; do
  before=$(rss)
  wrk -t "$(( c < 2 ? 1 : 2 ))" -c "$c" -d "${secs}s" --latency -s "$work/post.lua" "$url/v1/embed" >"$work/wrk.out" &
  wpid=$!
  during=()
  while kill -0 $wpid 2>/dev/null; do
    for _ in $(seq 100); do kill -0 $wpid 2>/dev/null && sleep 0.1; done
    kill -0 $wpid 2>/dev/null && during+=("$(printf %.0f "$(rss)")")
  done
  wait $wpid
  out=$(cat "$work/wrk.out")
  after=$(rss)
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p90=$(awk '$1=="90%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out"); non2xx=${non2xx:-0}
  errs=$(awk '/Socket errors/ {print $0}' <<<"$out" | sed 's/.*errors: //'); errs=${errs:-none}
  echo "| $c | $rps | $p50 | $p90 | $p99 | $non2xx | $errs | $(printf %.0f "$before"); ${during[*]}; $(printf %.0f "$after") |"
done
kill -TERM $pid
wait $pid 2>/dev/null || true
