#!/usr/bin/env bash
# cvat-cli for the hand-off test (tests/test_handoffs.py), in its own venv: DEST/venv/bin/cvat-cli.
# No CVAT server runs here; the test runs the printed command against cvat-cli's own argument parser.
set -euo pipefail
DEST=${1:?usage: cvat.sh DEST}
VERSION=2.80.0
mkdir -p "$DEST"
if [ -x "$DEST/venv/bin/cvat-cli" ] && [ "$(cat "$DEST/version" 2>/dev/null)" = "$VERSION" ]; then
  echo "cvat-cli $VERSION already in $DEST/venv"; exit 0
fi
rm -rf "$DEST/venv" "$DEST/version"
python3.11 -m venv "$DEST/venv"
"$DEST/venv/bin/pip" install -q --disable-pip-version-check "cvat-cli==$VERSION"
"$DEST/venv/bin/cvat-cli" --help >/dev/null
echo "$VERSION" >"$DEST/version"
