#!/usr/bin/env bash
# The two set-up commands of the README, for a fresh Debian/Ubuntu machine:
#
#   deploy/quickstart.sh          install what is missing, build, run the host with the eight Alorig deployments
#   deploy/quickstart.sh demo     the same with the small reference apps (hello, store, AstroTiming)
#   deploy/quickstart.sh test     install what is missing, check formatting and lints, build, run every test, then the fuzz targets 60 s each
#   deploy/quickstart.sh fuzz     the fuzz targets alone (FUZZ_SECONDS=3600 for long runs)
#   deploy/quickstart.sh bench    install what is missing, build, run the benchmarks
#   deploy/quickstart.sh soak     install what is missing, build, run the soak (SOAK_MINUTES, default 20)
#
# Installs only what is absent: the Rust target wasm32-wasip2 (rustup), from
# the distribution's packages PostgreSQL, Redis, Caddy, wrk, Chromium (headless,
# for the dashboard test) and python3-venv, and componentize-py (pinned, from PyPI)
# into target/python-venv for the Python guests. Services are not started system-wide: the tests start
# their own throwaway instances.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

install_missing() {
  if ! command -v cargo >/dev/null; then
    echo "error: cargo not found; install Rust with rustup first (https://rustup.rs)" >&2
    exit 1
  fi
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    say "adding the Rust target wasm32-wasip2"
    rustup target add wasm32-wasip2
  fi
  local packages=()
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || packages+=(postgresql postgresql-contrib)
  command -v redis-server >/dev/null || packages+=(redis-server)
  command -v caddy >/dev/null || packages+=(caddy)
  command -v wrk >/dev/null || packages+=(wrk)
  # The dashboard test renders the admin page in headless Chromium.
  command -v chromium >/dev/null || command -v chromium-browser >/dev/null || packages+=(chromium)
  # Python guests: componentize-py goes into a venv (sdk/python/setup-venv.sh).
  command -v python3 >/dev/null || packages+=(python3)
  python3 -c 'import ensurepip, venv' 2>/dev/null || packages+=(python3-venv)
  # The production tests: alert rules (promtool), the systemd units (systemd-analyze).
  command -v promtool >/dev/null || packages+=(prometheus)
  command -v systemd-analyze >/dev/null || packages+=(systemd)
  if [ ${#packages[@]} -gt 0 ]; then
    say "installing ${packages[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  fi
}

# Formatting and lints, before the (long) build and tests: each fails with one
# line saying what to run. Clippy checks the host's code, its unit tests, the
# end-to-end tests (tests/e2e) and the benchmarks, with the [workspace.lints]
# of Cargo.toml; it builds in check mode, in target/debug.
check_style() {
  for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
      say "adding the Rust component $component"
      rustup component add "$component"
    fi
  done
  say "checking formatting (cargo fmt)"
  if ! cargo fmt --all --check; then
    echo "error: the code above is not formatted as rustfmt formats it; run: cargo fmt --all" >&2
    exit 1
  fi
  say "checking lints (cargo clippy)"
  if ! cargo clippy -p alorig-host --all-targets --locked -- -D warnings; then
    echo "error: clippy found the problems above; fix them, then check with: cargo clippy -p alorig-host --all-targets --locked -- -D warnings" >&2
    exit 1
  fi
}

# What only the test suite needs: cargo-audit, checked against the RustSec
# advisory snapshot in ../shared/advisory-db, and kubernetes-validate (from PyPI,
# in target/kubernetes-venv) for deploy/kubernetes/. Pinned; installed only when missing.
CARGO_AUDIT_VERSION=0.22.2
install_test_tools() {
  if ! cargo audit --version 2>/dev/null | grep -q "$CARGO_AUDIT_VERSION"; then
    say "installing cargo-audit $CARGO_AUDIT_VERSION"
    # --debug: it reads one lock file, and builds in a third of the time.
    cargo install --locked --debug "cargo-audit@$CARGO_AUDIT_VERSION"
  fi
  deploy/kubernetes/setup-validate.sh
}

# The fuzz targets (fuzz/README.md): nightly Rust and cargo-fuzz, pinned.
CARGO_FUZZ_VERSION=0.13.2
install_fuzz_tools() {
  if ! rustup toolchain list | grep -q '^nightly'; then
    say "installing the nightly toolchain (for cargo-fuzz)"
    rustup toolchain install nightly --profile minimal
  fi
  if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    say "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
  fi
}

# Every guest component (the crates under components/ that build a cdylib).
guest_packages() {
  for toml in components/*/Cargo.toml; do
    grep -q cdylib "$toml" && printf -- '-p %s ' "$(basename "$(dirname "$toml")")"
  done
}

build() {
  say "building the host (release)"
  cargo build --release --locked -p alorig-host
  say "building the guest components (wasm32-wasip2)"
  # shellcheck disable=SC2046
  cargo build --release --locked --target wasm32-wasip2 $(guest_packages)
  say "building the Python guest components (componentize-py, pinned, in target/python-venv)"
  sdk/python/build-guests.sh
}

# Throwaway PostgreSQL and Redis for the reference apps (unless the caller gives
# ALORIG_POSTGRES_URL / ALORIG_REDIS_URL), in a temporary folder, stopped on exit.
DEV_DIR="${TMPDIR:-/tmp}/alorig-dev-$(id -u)"
PG_PORT=55432
REDIS_PORT=56379

as_pg() {
  # PostgreSQL refuses to run as root: run it as the `postgres` system user.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_dev_services() {
  if [ -z "${ALORIG_POSTGRES_URL:-}" ]; then
    PG_BIN=$(dirname "$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1)")
    mkdir -p "$DEV_DIR/pg"
    [ "$(id -u)" = 0 ] && chown postgres "$DEV_DIR" "$DEV_DIR/pg"
    if [ ! -f "$DEV_DIR/pg/PG_VERSION" ]; then
      as_pg "$PG_BIN/initdb" -D "$DEV_DIR/pg" -U postgres --auth=trust >/dev/null
    fi
    as_pg "$PG_BIN/pg_ctl" -D "$DEV_DIR/pg" -l "$DEV_DIR/pg.log" -w \
      -o "-p $PG_PORT -k $DEV_DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
    export ALORIG_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    trap 'as_pg "$PG_BIN/pg_ctl" -D "$DEV_DIR/pg" -m fast stop >/dev/null 2>&1; stop_redis' EXIT
  else
    trap stop_redis EXIT
  fi
  if [ -z "${ALORIG_REDIS_URL:-}" ]; then
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
      --daemonize yes --pidfile "$DEV_DIR/redis.pid" --dir "$DEV_DIR" --logfile "$DEV_DIR/redis.log"
    export ALORIG_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
  fi
}

stop_redis() {
  [ -f "$DEV_DIR/redis.pid" ] && kill "$(cat "$DEV_DIR/redis.pid")" 2>/dev/null || true
}

# The eight deployments of the seeds, in the seeds' deployment order.
ALORIG_APPS="igny8 igny8-staging psydge snapify sitebuilder observer astrotiming asms"

# The component file a manifest names (relative to the manifest).
component_of() {
  local path
  path=$(sed -n 's/^component *= *"\(.*\)".*/\1/p' "$1" | head -n 1)
  printf '%s/%s' "$(dirname "$1")" "$path"
}

# Development values for every secret the manifests read from the environment
# (`[secrets] X = { env = "NAME" }`) that is not set: random, kept in the dev
# folder so a journal sealed under one run still opens in the next.
dev_secrets() {
  local file="$DEV_DIR/secrets.env" name
  mkdir -p "$DEV_DIR"
  touch "$file"
  for name in $(sed -n 's/.*{ *env *= *"\([A-Z0-9_]*\)".*/\1/p' "$@" | sort -u); do
    [ -n "${!name:-}" ] && continue
    grep -q "^$name=" "$file" || printf '%s=%s\n' "$name" "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >>"$file"
  done
  set -a
  # shellcheck disable=SC1090
  . "$file"
  set +a
}

# How to reach an app: its first route's host and a path that answers.
main_path() {
  case "$1" in
    psydge) echo "/api/v1/gate/42" ;;
    igny8|igny8-staging) echo "/system/ping/" ;;
    observer) echo "/api/v1/health" ;;
    astrotiming) echo "/now?lat=51.5&lon=-0.13" ;;
    sitebuilder) echo "/builder/demo" ;;
    asms) echo "/healthz" ;;
    *) echo "/" ;;
  esac
}

# The curl options that path needs: Site Builder's API answers only with its
# token (a dev secret); its demo call publishes a site, served at acme.sites.alorig.com.
curl_options() {
  case "$1" in
    sitebuilder) printf ' -X POST -H "Authorization: Bearer $(sed -n %s %s)"' "'s/^SITEBUILDER_API_TOKEN=//p'" "$DEV_DIR/secrets.env" ;;
  esac
}

run_alorig() {
  local manifests=() app m
  for app in $ALORIG_APPS; do
    m="manifests/$app.toml"
    if [ ! -f "$m" ]; then
      say "skipping $app: no $m on this branch"
    elif [ ! -f "$(component_of "$m")" ]; then
      say "skipping $app: its component $(component_of "$m") was not built"
    else
      manifests+=("$m")
    fi
  done
  dev_secrets "${manifests[@]}"
  export ALORIG_DATA_DIR="$DEV_DIR/data"
  say "running ${#manifests[@]} Alorig deployments with the seeds' memory caps, host budget from deploy/host.toml (Ctrl-C stops it all)"
  for m in "${manifests[@]}"; do
    app=$(basename "$m" .toml)
    printf '  %-14s cap %-8s curl%s -H "Host: %s" "http://127.0.0.1:8080%s"\n' "$app" \
      "$(sed -n 's/^memory *= *"\(.*\)".*/\1/p' "$m" | head -n 1)" "$(curl_options "$app")" \
      "$(sed -n 's/^host *= *"\(.*\)".*/\1/p' "$m" | head -n 1)" "$(main_path "$app")" >&2
  done
  say "operators: alorig-host status (token: $ALORIG_DATA_DIR/admin.token), dashboard http://127.0.0.1:9090/"
  target/release/alorig-host up "${manifests[@]}" --config deploy/host.toml
}

case "${1:-run}" in
  run)
    install_missing
    build
    start_dev_services
    run_alorig
    ;;
  demo)
    install_missing
    build
    start_dev_services
    dev_secrets manifests/astrotiming.toml
    say "running the host with the reference apps (Ctrl-C stops it and the throwaway services)"
    say "try: curl http://hello.localhost:8080/   curl -X POST http://store.localhost:8080/setup"
    say "     curl -H 'Host: api.astrotiming.com' 'http://127.0.0.1:8080/now?lat=51.5&lon=-0.13'"
    target/release/alorig-host up examples/hello.toml examples/store.toml manifests/astrotiming.toml
    ;;
  test)
    install_missing
    check_style
    build
    install_test_tools
    say "running the tests"
    cargo test --release --locked -p alorig-host
    # Every fuzz target for 60 s; a crash fails the test command (fuzz/run.sh
    # names the target and the input). Four at a time on CI's 2 cores, so each
    # gets about half a core for its minute: the CI budget (fuzz/README.md).
    say "running the fuzz targets (60 s each, ${FUZZ_JOBS:-4} at a time)"
    install_fuzz_tools
    FUZZ_JOBS="${FUZZ_JOBS:-4}" fuzz/run.sh
    ;;
  fuzz)
    # Every fuzz target for FUZZ_SECONDS (default 60) each, two at a time.
    install_missing
    install_fuzz_tools
    build
    fuzz/run.sh "${@:2}"
    ;;
  bench)
    install_missing
    build
    cargo bench --locked -p alorig-host --bench hosting -- "${@:2}"
    ;;
  soak)
    # Every Alorig app under a mixed load with a guest fault a minute and a
    # deploy every SOAK_DEPLOY_EVERY (3) minutes, for SOAK_MINUTES (20); its
    # figures go in RELIABILITY.md ("Soak").
    install_missing
    build
    say "running the soak for ${SOAK_MINUTES:-20} minutes"
    cargo test --release --locked -p alorig-host --test e2e -- --ignored --nocapture soak::
    ;;
  *)
    echo "usage: deploy/quickstart.sh [run|demo|test|fuzz|bench|soak]" >&2
    exit 2
    ;;
esac
