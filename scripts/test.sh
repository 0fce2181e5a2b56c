#!/usr/bin/env bash
# Run the test suite (pytest args pass through): ./scripts/test.sh -k resume -x
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
