#!/usr/bin/env bash
# Builds every Python guest (components/python/<name>/app.py) into
# target/python/<name>.wasm, its world chosen by components/python/<name>/world.toml
# (the manifest sections it uses; manifests/<name>.toml when absent), or named in components/python/<name>/world
# for a plain componentize-py module without the SDK. A guest whose inputs did not change is skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
sdk/python/setup-venv.sh
export COMPONENTIZE_PY="$PWD/target/python-venv/bin/componentize-py"
for dir in components/python/*/; do
  name=$(basename "$dir")
  [ -f "$dir/app.py" ] || continue
  if [ -f "$dir/world" ]; then   # a plain componentize-py module for this world, no SDK
    world=(--world "$(cat "$dir/world")")
  elif [ -f "$dir/world.toml" ]; then
    world=(--manifest "$dir/world.toml")
  else                           # a reference app: its operator manifest
    world=(--manifest "manifests/$name.toml")
  fi
  python3 sdk/python/alorig_build.py "${world[@]}" --src "$dir" --wit wit -o "target/python/$name.wasm"
done
