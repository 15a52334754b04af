#!/usr/bin/env bash
# Create .venv and install ghostbox with the pinned versions of requirements.lock.
# Idempotent: a second run with unchanged pins and extras installs nothing.
#   GHOSTBOX_EXTRAS  extras to install (default "cpu,dev"; "gpu,dev" for onnxruntime-gpu)
#   PYTHON           interpreter for the venv (default python3; 3.10-3.12)
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${GHOSTBOX_EXTRAS:-cpu,dev}"
python="${PYTHON:-python3}"
venv=.venv

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi

lock=requirements.lock
stamp="$venv/.ghostbox-installed"
want="$(cat pyproject.toml "$lock" | sha256sum | cut -d' ' -f1) $extras"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

pip=("$venv/bin/python" -m pip --disable-pip-version-check)
lock_for_extras="$venv/.constraints.txt"
if [[ ",$extras," == *",gpu,"* ]]; then
    # onnxruntime and onnxruntime-gpu own the same module: never both.
    grep -v '^onnxruntime==' "$lock" > "$lock_for_extras"
    "${pip[@]}" uninstall -y -q onnxruntime >/dev/null 2>&1 || true
else
    cp "$lock" "$lock_for_extras"
fi

# torch first and alone, pinned: otherwise a dependency may pull a different (multi-GB) build.
"${pip[@]}" install -q -c "$lock_for_extras" torch torchvision
"${pip[@]}" install -q -c "$lock_for_extras" -e ".[$extras]"
echo "$want" > "$stamp"
echo "ghostbox installed in $venv (extras: $extras)"
