# Sourced by train.sh and test.sh: create .venv if missing and (re)install it from the project's own
# files whenever pyproject.toml or requirements.lock changed since the last install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

pick_python() {
    for candidate in python3.11 python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "error: Python 3.11 is required to create $VENV" >&2
    return 1
}

ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "Creating $VENV ..." >&2
        "$(pick_python)" -m venv "$VENV"
    fi
    local want have
    want="$(cat "$ROOT/pyproject.toml" "$ROOT/requirements.lock" | sha256sum | cut -d' ' -f1)"
    have="$(cat "$VENV/.installed-hash" 2>/dev/null || true)"
    if [ "$want" != "$have" ]; then
        echo "Installing dependencies from requirements.lock into $VENV (first run takes a few minutes) ..." >&2
        "$VENV/bin/python" -m pip install --quiet --progress-bar off -r "$ROOT/requirements.lock" 2>&1 |
            grep -v "is ignored: it is neither a file nor a directory" >&2 || true
        "$VENV/bin/python" -c 'import torch, torchvision, hydra' ||
            { echo "error: dependency install failed (see pip output above)" >&2; return 1; }
        "$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$ROOT" >&2
        echo "$want" > "$VENV/.installed-hash"
    fi
}

ensure_venv
