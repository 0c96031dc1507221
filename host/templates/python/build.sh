#!/usr/bin/env bash
# Builds {{name}}.wasm from app.py: componentize-py (pinned) in .venv, the world
# chosen from {{name}}.toml's sections by sdk/alorig_build.py.
set -euo pipefail
cd "$(dirname "$0")"
if [ "$(.venv/bin/componentize-py --version 2>/dev/null)" != "componentize-py 0.25.1" ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check componentize-py==0.25.1
fi
COMPONENTIZE_PY=.venv/bin/componentize-py python3 sdk/alorig_build.py --manifest {{name}}.toml --src . --wit wit -o {{name}}.wasm
