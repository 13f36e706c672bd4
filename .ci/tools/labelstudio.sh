#!/usr/bin/env bash
# Label Studio for the hand-off test (tests/test_handoffs.py), in its own venv: DEST/venv/bin/label-studio.
# Its dependencies (Django, ...) need not agree with the project's. Idempotent: a finished build is kept.
# The test starts the server itself (once per session, loopback only), so this script starts nothing.
set -euo pipefail
DEST=${1:?usage: labelstudio.sh DEST}
VERSION=1.23.2
mkdir -p "$DEST"
if [ -x "$DEST/venv/bin/label-studio" ] && [ "$(cat "$DEST/version" 2>/dev/null)" = "$VERSION" ]; then
  echo "label-studio $VERSION already in $DEST/venv"; exit 0
fi
rm -rf "$DEST/venv" "$DEST/version"
python3.11 -m venv "$DEST/venv"
"$DEST/venv/bin/pip" install -q --disable-pip-version-check "label-studio==$VERSION"
"$DEST/venv/bin/python" -c "import label_studio; print('label-studio', label_studio.__version__)"
echo "$VERSION" >"$DEST/version"
