#!/usr/bin/env bash
# Creates target/python-venv with the pinned componentize-py from PyPI (a venv:
# Debian's system pip refuses installs, PEP 668). Does nothing when it is there.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=target/python-venv
COMPONENTIZE_PY_VERSION=0.25.1
if [ "$("$VENV/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
