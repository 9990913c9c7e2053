#!/usr/bin/env bash
# Runs scripts/torchscript/convert.py in its pinned environment: creates
# .zooaudit/torch/convert-venv from requirements.txt (hashes required, no
# dependency resolution; torch is the wheel scripts/setup-torch.sh checked)
# when it is missing or the requirements changed, then passes its arguments
# to convert.py. Example (faceplugin, the default):
#   scripts/torchscript/convert.sh
#   scripts/torchscript/convert.sh --model sface   # reports what fails
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir="$root/.zooaudit/torch"
req="$root/scripts/torchscript/requirements.txt"
venv="$dir/convert-venv"

"$root/scripts/setup-torch.sh" --env >/dev/null
if ! cmp -s "$req" "$venv/.zooaudit-requirements" 2>/dev/null; then
  echo "convert: creating $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --require-hashes \
    --find-links "$dir/wheels" -r "$req" >&2
  cp "$req" "$venv/.zooaudit-requirements"
fi
exec "$venv/bin/python" "$root/scripts/torchscript/convert.py" "$@"
