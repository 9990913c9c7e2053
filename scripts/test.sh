#!/usr/bin/env bash
# The test suite, as README and CI run it: installs what the tests need
# (ONNX Runtime, the Python reference venv), builds every plugin, runs all
# tests. The tests build their misbehaving fixture plugins themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages the tests start themselves: PostgreSQL (the audit
# registry's tests run a cluster as the postgres user) and Chromium (the HTML
# report and the zoo dashboard are rendered headless).
need=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing Debian packages: ${need[*]}" >&2
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
eval "$(scripts/setup.sh --env)"
# The real Open Inference Protocol server the http adapter's tests start
# (MLServer + onnxruntime + dlib, hash-pinned): its venv, built once.
tests/servers/oip/serve.sh --setup
cargo build --workspace --locked
# cargo-nextest, where installed, schedules every test of every crate on one
# pool (one process per test), so a crate's slowest test overlaps the next
# crate's tests instead of leaving cores idle; plain `cargo test` otherwise.
# (The workspace has no doctests; nextest does not run them.)
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked "$@"
fi
