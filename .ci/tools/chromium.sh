#!/usr/bin/env bash
# A headless browser for the report test (tests/test_report_browser.py): Debian's chromium (apt, if missing) and
# Playwright's Python package in DEST/venv, which drives that executable over the DevTools protocol (no browser
# download: DEST/chromium is a link to the system one).
set -euo pipefail
DEST=${1:?usage: chromium.sh DEST}
PLAYWRIGHT=1.65.3
mkdir -p "$DEST"
if ! command -v chromium >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  # another tool's script may hold apt's locks at the same time in CI: wait and retry rather than fail
  for try in 1 2 3 4 5 6 7 8 9 10; do
    if apt-get -o DPkg::Lock::Timeout=120 update -q &&
      apt-get -o DPkg::Lock::Timeout=120 install -y -q --no-install-recommends chromium; then
      break
    fi
    [ "$try" -lt 10 ] || exit 1
    sleep 10
  done
fi
ln -sfn "$(command -v chromium)" "$DEST/chromium"
"$DEST/chromium" --version
if [ -x "$DEST/venv/bin/python" ] && [ "$(cat "$DEST/version" 2>/dev/null)" = "$PLAYWRIGHT" ]; then
  echo "playwright $PLAYWRIGHT already in $DEST/venv"; exit 0
fi
rm -rf "$DEST/venv" "$DEST/version"
python3.11 -m venv "$DEST/venv"
"$DEST/venv/bin/pip" install -q --disable-pip-version-check "playwright==$PLAYWRIGHT"
echo "$PLAYWRIGHT" >"$DEST/version"
