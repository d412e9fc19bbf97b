#!/usr/bin/env bash
# Rerun the Python fal_client tests against fal-client 0.13.x in a throwaway venv.
# The project's own venv keeps the pinned current fal-client; this never touches it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
FAL_CLIENT_SPEC="${FAL_CLIENT_SPEC:-fal-client==0.13.*}"
CLIENT_TESTS=(
    tests/test_client_patch.py
    tests/test_fal_client_sync.py
    tests/test_fal_client_async.py
    tests/test_uploads_streaming.py
    tests/test_webhooks.py
    tests/test_virtual_time.py
    tests/test_realtime.py
)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/falcompat.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
VENV="$WORK/venv"

echo "fal_client compat: creating $VENV with $("$PYTHON" --version)"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e "$ROOT" pytest pytest-asyncio pillow "$FAL_CLIENT_SPEC"

VERSION="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("fal-client"))')"
case "$VERSION" in
    0.13.*) echo "fal_client compat: testing against fal-client $VERSION" ;;
    *) echo "fal_client compat: expected fal-client 0.13.x, got $VERSION" >&2; exit 1 ;;
esac

cd "$ROOT"
"$VENV/bin/pytest" -q -rs -p no:cacheprovider "${CLIENT_TESTS[@]}"
