#!/usr/bin/env bash
# The TorchScript adapter's tests (CI runs them; kept out of scripts/test.sh
# because libtorch is a 540 MB download and the converter's venv 4 GB):
# installs libtorch and the pinned TorchScript model (scripts/setup.sh
# --torch), builds zooaudit and the plugin (its own Cargo project), and runs
# the plugin's tests: the adapter on real faces against ONNX Runtime's
# numbers, and through the host (`zooaudit plugins`, an audit whose verdict
# and fidelity equal the ONNX model's).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh --torch --env)"
cargo build --workspace --locked
export ZOOAUDIT_BIN="$PWD/target/debug/zooaudit"
export ZOOAUDIT_ZOO="${ZOOAUDIT_SHARED:-$PWD/../shared}/zoo"
# The dev profile: the compute is libtorch's own (already optimised), and
# torch-sys's C++ glue compiles much faster unoptimised (measured: cold
# build + tests 3.3 min, against about 5 min for the release build alone).
# The plugin file itself first: `cargo test` builds only the rlib.
cargo build --locked --manifest-path plugins/torchscript/Cargo.toml
cargo test --locked --manifest-path plugins/torchscript/Cargo.toml "$@"
