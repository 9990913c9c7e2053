#!/usr/bin/env bash
# The test suite, as README and CI run it: installs what the tests need
# (ONNX Runtime, the Python reference venv), builds every plugin, runs all
# tests. The tests build their misbehaving fixture plugins themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh --env)"
cargo build --workspace --locked
cargo test --workspace --locked "$@"
