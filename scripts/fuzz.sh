#!/usr/bin/env bash
# Builds the fuzz targets (tests/fuzz, libFuzzer) and runs each for SECONDS
# (default 30) on a corpus seeded from the project's real files: manifests,
# audit, zoo and trigger files from examples/ and triggers/, the YuNet model
# and face photos from ../shared/zoo, the committed seeds in
# tests/fuzz/seeds (a real report, pair bundle and attestation), and every
# input that once crashed a target (tests/fuzz/regressions/TARGET).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Stable Rust, no cargo-fuzz needed: the flags are the ones cargo-fuzz passes
# (SanitizerCoverage for libFuzzer, debug assertions and overflow checks on,
# `--cfg fuzzing`); with cargo-fuzz installed `cargo fuzz run --fuzz-dir
# tests/fuzz TARGET` runs the same targets. A crash stops the run with exit 1
# and leaves the input in target/fuzz/artifacts/TARGET/; the corpus grows in
# target/fuzz/corpus/TARGET/ across runs. FUZZ_JOBS (default: 1) targets run
# at once.
set -euo pipefail
cd "$(dirname "$0")/.."
# libFuzzer is C++: libfuzzer-sys builds it with the system's c++.
if ! command -v c++ >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing Debian package: g++" >&2
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq g++ >/dev/null
fi
secs=${1:-30}
shift || true
all=(manifest audit_file zoo trigger_suite pair_bundle report dsse onnx image guard_request npy model_signature)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
shared=${ZOOAUDIT_SHARED:-../shared}
work=target/fuzz
export CARGO_TARGET_DIR=$work/build
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros
# (they are not linked with libFuzzer), as cargo-fuzz does.
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --locked --manifest-path tests/fuzz/Cargo.toml --target "$host" \
  $(printf -- '--bin %s ' "${targets[@]}")

seed() { # seed TARGET FILE...
  local dir=$work/corpus/$1
  shift
  mkdir -p "$dir"
  for f in "$@"; do
    [ -f "$f" ] && cp -f "$f" "$dir/seed-$(sha256sum "$f" | cut -c1-16)"
  done
  return 0
}
seed manifest examples/*/*.toml
seed audit_file examples/shared-zoo/audit.toml
seed zoo examples/*/zoo.toml
seed trigger_suite triggers/*.toml
seed onnx "$shared"/zoo/models/yunet_*.onnx
# Small images only: libFuzzer's inputs grow to the largest seed, and a
# multi-megapixel photo makes every run slow (aligned PNGs, 150×150 JPEGs).
seed image $(ls "$shared"/zoo/faces/aligned112/labeled/*/* 2>/dev/null | head -8) \
  $(ls -S "$shared"/zoo/faces/raw/labeled/*/*.jpg 2>/dev/null | tail -4)
faces=("$shared"/zoo/faces/aligned112/labeled/*/*.png)
face=${faces[0]}
if [ -f "$face" ]; then
  mkdir -p "$work/corpus/guard_request"
  cp -f "$face" "$work/corpus/guard_request/seed-face"
  printf '{"images": ["%s", "AAEC"]}' "$(base64 -w0 "$face")" > "$work/corpus/guard_request/seed-batch"
fi
for t in pair_bundle report dsse npy model_signature; do
  seed "$t" tests/fuzz/seeds/"$t"/*
done
# Every crash found so far, fixed: libFuzzer runs the corpus first, so a
# regression fails at once.
for t in "${all[@]}"; do
  seed "$t" tests/fuzz/regressions/"$t"/*
done

status=0
run() {
  local t=$1
  mkdir -p "$work/artifacts/$t"
  if "$CARGO_TARGET_DIR/$host/release/$t" "$work/corpus/$t" \
      -max_total_time="$secs" -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 \
      -artifact_prefix="$work/artifacts/$t/" > "$work/$t.log" 2>&1; then
    echo "fuzz $t: $(grep -E '^stat::number_of_executed_units' "$work/$t.log" | awk '{print $2}') runs in ${secs} s, no crash"
  else
    echo "fuzz $t: CRASH, input in $work/artifacts/$t/ (log: $work/$t.log)"
    tail -n 30 "$work/$t.log"
    return 1
  fi
}
jobs_max=${FUZZ_JOBS:-1}
pids=()
for t in "${targets[@]}"; do
  run "$t" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$jobs_max" ]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
