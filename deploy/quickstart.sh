#!/usr/bin/env bash
# The two set-up commands of the README, for a fresh Debian/Ubuntu machine:
#
#   deploy/quickstart.sh          install what is missing, build, run the host with the reference apps
#   deploy/quickstart.sh test     install what is missing, build, run every test
#   deploy/quickstart.sh bench    install what is missing, build, run the benchmarks
#
# Installs only what is absent: the Rust target wasm32-wasip2 (rustup), and from
# the distribution's packages PostgreSQL, Redis, Caddy, wrk and Chromium (headless,
# for the dashboard test). Services are not started system-wide: the tests start
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
  # The production tests: alert rules (promtool), the systemd units (systemd-analyze).
  command -v promtool >/dev/null || packages+=(prometheus)
  command -v systemd-analyze >/dev/null || packages+=(systemd)
  if [ ${#packages[@]} -gt 0 ]; then
    say "installing ${packages[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
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

case "${1:-run}" in
  run)
    install_missing
    build
    start_dev_services
    say "running the host with the reference apps (Ctrl-C stops it and the throwaway services)"
    say "try: curl http://hello.localhost:8080/   curl -X POST http://store.localhost:8080/setup   curl 'http://gate.psydge.localhost:8080/may-trade/42?risk_pct=0.8'"
    say "     curl -H 'Host: api.astrotiming.com' 'http://127.0.0.1:8080/now?lat=51.5&lon=-0.13'"
    target/release/alorig-host up manifests/hello.toml manifests/store.toml manifests/psydge-gate.toml manifests/astrotiming.toml
    ;;
  test)
    install_missing
    build
    say "running the tests"
    cargo test --release --locked -p alorig-host
    ;;
  bench)
    install_missing
    build
    cargo bench --locked -p alorig-host --bench hosting -- "${@:2}"
    ;;
  *)
    echo "usage: deploy/quickstart.sh [run|test|bench]" >&2
    exit 2
    ;;
esac
