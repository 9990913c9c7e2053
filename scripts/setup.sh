#!/usr/bin/env bash
# Installs what zooaudit needs beyond cargo, into .zooaudit/ (idempotent):
#  - ONNX Runtime 1.31.1's shared library, taken from the PyPI wheel with its
#    sha256 checked (the wheel's and the library's);
#  - a Python venv (.zooaudit/venv) with the same onnxruntime wheel, numpy and
#    pillow, used by the tests as an independent reference implementation;
#  - with --torch, also libtorch for the TorchScript adapter
#    (scripts/setup-torch.sh: the PyPI torch 2.13.0 wheel, sha256-pinned) and
#    the TorchScript test model (scripts/torchscript/convert.sh: faceplugin
#    converted, byte-reproducible, its sha256 pinned).
# Prints the environment to use: eval "$(scripts/setup.sh --env)" (or
# eval "$(scripts/setup.sh --torch --env)").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.zooaudit"
mkdir -p "$dir/wheels" "$dir/lib"

ORT_VERSION=1.31.1
ORT_WHEEL=onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl
ORT_WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
ORT_LIB=libonnxruntime.so.$ORT_VERSION
ORT_LIB_SHA256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3

quiet=0; torch=0
for a in "$@"; do
  case "$a" in
    --env) quiet=1 ;;
    --torch) torch=1 ;;
    *) echo "setup: unknown argument $a (--env, --torch)" >&2; exit 2 ;;
  esac
done
log() { [ $quiet = 1 ] || echo "setup: $*" >&2; }

check() { # file sha256
  local got; got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then echo "setup: $1 has sha256 $got, expected $2" >&2; rm -f "$1"; exit 1; fi
}

if [ ! -f "$dir/lib/$ORT_LIB" ]; then
  if [ ! -f "$dir/wheels/$ORT_WHEEL" ]; then
    log "downloading onnxruntime==$ORT_VERSION from PyPI"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
      --implementation cp --platform manylinux_2_28_x86_64 \
      -d "$dir/wheels" "onnxruntime==$ORT_VERSION" >&2
  fi
  check "$dir/wheels/$ORT_WHEEL" "$ORT_WHEEL_SHA256"
  python3 - "$dir/wheels/$ORT_WHEEL" "$dir/lib" "$ORT_LIB" <<'PY'
import sys, zipfile, shutil, os
wheel, dest, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open("onnxruntime/capi/" + name) as src, open(os.path.join(dest, name + ".part"), "wb") as dst:
    shutil.copyfileobj(src, dst)
os.replace(os.path.join(dest, name + ".part"), os.path.join(dest, name))
PY
  check "$dir/lib/$ORT_LIB" "$ORT_LIB_SHA256"
  log "ONNX Runtime library at $dir/lib/$ORT_LIB"
fi

if [ ! -x "$dir/venv/bin/python" ] || ! "$dir/venv/bin/python" -c "import onnxruntime, numpy, PIL, securesystemslib, cryptography, model_signing, OpenSSL" 2>/dev/null; then
  log "creating the Python reference venv"
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install -q --disable-pip-version-check "$dir/wheels/$ORT_WHEEL" numpy pillow \
    securesystemslib==1.6.0 "cryptography>=44" \
    model-signing==1.1.1 pyopenssl==26.4.0 >&2
fi

echo "export ORT_DYLIB_PATH='$dir/lib/$ORT_LIB'"
echo "export ZOOAUDIT_PYTHON='$dir/venv/bin/python'"
if [ $torch = 1 ]; then
  "$root/scripts/setup-torch.sh" --env
  PT="$dir/torch/faceplugin_fr_feature.pt"
  PT_SHA256=9a882dcd83ea6af022de1cba9f80ad7c40bcc4b456e0ecef13c6f543c8602e70
  if [ ! -f "$PT" ] || [ "$(sha256sum "$PT" | cut -d' ' -f1)" != "$PT_SHA256" ] \
    || [ ! -f "$dir/torch/faceplugin_fr_feature.reference.json" ]; then
    log "converting faceplugin to TorchScript"
    "$root/scripts/torchscript/convert.sh" >&2
  fi
  echo "export ZOOAUDIT_TORCHSCRIPT_PT='$PT'"
fi
