#!/usr/bin/env bash
# What a user without ../shared meets (CI runs this after `make test`):
#  1. the built wheel (not the editable install), in a fresh venv outside the checkout, lists the data
#     registry and the models and dry-runs a shipped example study by name;
#  2. with the shared folder hidden (EDITSCOPE_SHARED=) and an empty cache, the quickstart study
#     fetches its data from a mirror of the registry's sources (a local HTTP server standing in for
#     GitHub, EDITSCOPE_DATA_URL) and runs its first units.
# The mirror is written from ../shared by `editscope data mirror` (only files with the published hash).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
VENV=${VENV:-$REPO/.venv}
WORK=$(mktemp -d)
trap 'kill ${SERVER:-} 2>/dev/null || true; rm -rf "$WORK"' EXIT

echo "== wheel"
"$VENV/bin/python" -m pip wheel -q . --no-deps --no-build-isolation -w "$WORK/dist"
python_bin=$("$VENV/bin/python" -c 'import sys; print(sys.executable)')
"$python_bin" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --no-deps "$WORK"/dist/editscope-*.whl
# the dependencies come from the development venv (its site-packages, not its editable editscope)
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
fresh=$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$site" > "$fresh/zz-deps.pth"

cd "$WORK"
export EDITSCOPE_SHARED= EDITSCOPE_CACHE="$WORK/cache" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
ES="$WORK/venv/bin/editscope"
"$WORK/venv/bin/python" - <<'PY'
import editscope, sys
assert "site-packages" in editscope.__file__ and "/src/" not in editscope.__file__, editscope.__file__
print("editscope from", editscope.__file__)
from editscope.models.derive import RECIPES, shipped_folder
shipped = shipped_folder(RECIPES["smollm2-135m-arith"])  # the wheel carries the arithmetic model's adapter
assert shipped is not None and "site-packages" in str(shipped), shipped
print("shipped adapter", shipped.name)
PY
"$ES" data list
"$ES" models
"$ES" run quickstart --dry-run

echo "== data from a mirror, shared folder hidden"
EDITSCOPE_SHARED="$REPO/../shared" "$ES" data mirror "$WORK/mirror" wikitext2 me_ppl counterfact
port=$("$WORK/venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$WORK/venv/bin/python" -m http.server "$port" --bind 127.0.0.1 --directory "$WORK/mirror" >/dev/null 2>&1 &
SERVER=$!
sleep 1
export EDITSCOPE_DATA_URL="http://127.0.0.1:$port"
if "$ES" data path wikitext2 --no-fetch >/dev/null 2>&1; then echo "the hidden shared folder was still read"; exit 1; fi
"$ES" data fetch --for quickstart
"$ES" data verify wikitext2 me_ppl
"$ES" run quickstart --out "$WORK/run" --units 2 --no-report
echo "fresh-machine check: ok"
