#!/usr/bin/env bash
# Creates target/kubernetes-venv with the pinned kubernetes-validate from PyPI
# (a venv: Debian's system pip refuses installs, PEP 668); the test suite checks
# deploy/kubernetes/*.yaml with it (tests/e2e/cluster.rs). Does nothing when it
# is there at this version.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=target/kubernetes-venv
KUBERNETES_VALIDATE_VERSION=1.37.0
if [ "$("$VENV/bin/kubernetes-validate" --version 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
