#!/usr/bin/env bash
# Installs libtorch for the TorchScript adapter (plugins/torchscript: crate
# `tch` 0.26, whose torch-sys is built for PyTorch 2.13.0) into
# .zooaudit/torch/ (git-ignored; idempotent):
#  - the PyPI wheels of torch 2.13.0 (cp311, manylinux_2_28 x86_64) and of
#    the two CUDA libraries its libtorch_cpu.so is linked against even for
#    the CPU (libcudart.so.13, libcupti.so.13), each checked against the
#    sha256 pinned below;
#  - a venv (.zooaudit/torch/venv) holding those three wheels, --no-deps: it
#    is only where the libraries live (`import torch` there fails: Python's
#    torch loads libtorch_cuda.so and the whole CUDA stack; the converter's
#    environment is scripts/torchscript/convert.sh's);
#  - .zooaudit/torch/libtorch, the layout torch-sys reads from LIBTORCH:
#    include/ -> the wheel's headers; lib/ with links to libtorch_cpu.so,
#    libc10.so, libtorch.so, libgomp.so.1 (+ libgomp.so, for -lgomp),
#    libcudart.so.13 and libcupti.so.13; build-version ("2.13.0"), which
#    makes torch-sys check the version (so no LIBTORCH_BYPASS_VERSION_CHECK).
#    NOT libtorch_cuda.so: torch-sys links it whenever it is there, and it
#    needs cuDNN, cuBLAS, NCCL, ... So this libtorch runs on the CPU only
#    (tch::Cuda::is_available() is false).
# Building needs LIBTORCH (LIBTORCH_INCLUDE and LIBTORCH_LIB default to it;
# LIBTORCH_CXX11_ABI defaults to 1, which the wheel is). Running needs
# LIBTORCH/lib on the library path: the plugin's build.rs records it as the
# plugin's RUNPATH, and libtorch_cpu.so finds the rest through its own
# $ORIGIN, so LD_LIBRARY_PATH is only a fallback (for binaries built
# without that run path).
# Prints the environment to use: eval "$(scripts/setup-torch.sh --env)".
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.zooaudit/torch"
mkdir -p "$dir/wheels"

TORCH_VERSION=2.13.0
TORCH_WHEEL=torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl
TORCH_WHEEL_SHA256=60fcdcb2f3876e21146cb4524ef06397d727ca9ad5f020818547e25075fe3cb7
CUDART_WHEEL=nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
CUDART_WHEEL_SHA256=7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548
CUPTI_WHEEL=nvidia_cuda_cupti-13.0.85-py3-none-manylinux_2_25_x86_64.whl
CUPTI_WHEEL_SHA256=4eb01c08e859bf924d222250d2e8f8b8ff6d3db4721288cf35d14252a4d933c8

quiet=0; [ "${1:-}" = "--env" ] && quiet=1
log() { [ $quiet = 1 ] || echo "setup-torch: $*" >&2; }

check() { # file sha256
  local got; got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then echo "setup-torch: $1 has sha256 $got, expected $2" >&2; rm -f "$1"; exit 1; fi
}

fetch() { # wheel-file sha256 requirement
  if [ ! -f "$dir/wheels/$1" ]; then
    log "downloading $3 from PyPI"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
      --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 \
      --platform manylinux_2_25_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$dir/wheels" "$3" >&2
    if [ ! -f "$dir/wheels/$1" ]; then
      echo "setup-torch: pip did not download $1 for $3" >&2; exit 1
    fi
  fi
  check "$dir/wheels/$1" "$2"
}

venv="$dir/venv"
site="$venv/lib/python3.11/site-packages"
stamp="$venv/.zooaudit-wheels"
want="$TORCH_WHEEL_SHA256 $CUDART_WHEEL_SHA256 $CUPTI_WHEEL_SHA256"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -f "$site/torch/lib/libtorch_cpu.so" ]; then
  fetch "$TORCH_WHEEL" "$TORCH_WHEEL_SHA256" "torch==$TORCH_VERSION"
  fetch "$CUDART_WHEEL" "$CUDART_WHEEL_SHA256" "nvidia-cuda-runtime==13.0.96.*"
  fetch "$CUPTI_WHEEL" "$CUPTI_WHEEL_SHA256" "nvidia-cuda-cupti==13.0.85.*"
  log "installing the wheels into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --no-index \
    "$dir/wheels/$TORCH_WHEEL" "$dir/wheels/$CUDART_WHEEL" "$dir/wheels/$CUPTI_WHEEL" >&2
  echo "$want" > "$stamp"
fi

# The libtorch layout torch-sys reads: links only, laid out anew (next to
# it, then swapped in) unless it is already exactly this.
lt="$dir/libtorch"
links=(
  "include=$site/torch/include"
  "lib/libtorch_cpu.so=$site/torch/lib/libtorch_cpu.so"
  "lib/libc10.so=$site/torch/lib/libc10.so"
  "lib/libtorch.so=$site/torch/lib/libtorch.so"
  "lib/libgomp.so.1=$site/torch/lib/libgomp.so.1"
  "lib/libgomp.so=libgomp.so.1"
  "lib/libcudart.so.13=$site/nvidia/cu13/lib/libcudart.so.13"
  "lib/libcupti.so.13=$site/nvidia/cu13/lib/libcupti.so.13"
)
laid_out() {
  [ "$(cat "$lt/build-version" 2>/dev/null)" = "$TORCH_VERSION" ] || return 1
  [ "$(find "$lt" -mindepth 1 | wc -l)" = $((${#links[@]} + 2)) ] || return 1
  local l
  for l in "${links[@]}"; do
    [ "$(readlink "$lt/${l%%=*}")" = "${l#*=}" ] && [ -e "$lt/${l%%=*}" ] || return 1
  done
}
if ! laid_out; then
  rm -rf "$lt.part"
  mkdir -p "$lt.part/lib"
  for l in "${links[@]}"; do
    target=${l#*=}
    case "$target" in /*) [ -e "$target" ] || { echo "setup-torch: $target is missing" >&2; exit 1; } ;; esac
    ln -s "$target" "$lt.part/${l%%=*}"
  done
  echo "$TORCH_VERSION" > "$lt.part/build-version"
  rm -rf "$lt"
  mv "$lt.part" "$lt"
  laid_out || { echo "setup-torch: $lt is not as laid out" >&2; exit 1; }
  log "libtorch $TORCH_VERSION laid out at $lt"
fi

echo "export LIBTORCH='$lt'"
echo "export LD_LIBRARY_PATH='$lt/lib'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
