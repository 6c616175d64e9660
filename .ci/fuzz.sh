#!/usr/bin/env bash
# API fuzzing: schemathesis against /openapi.json of a running server, on
# SQLite and on PostgreSQL, with an admin key, a read key, the operator key
# and no key. Checks: no 5xx (not_a_server_error), replies that conform to
# the document (status codes, content types, schemas). Bounded in time:
# about 4.5 x FUZZ_SECS (default 20) per backend, five runs.
#
#   bash .ci/fuzz.sh                 # both backends
#   FUZZ_BACKENDS=sqlite bash .ci/fuzz.sh
#
# Needs the debug server binary (built here), Python 3 (schemathesis is
# installed into a virtualenv under target/), and for PostgreSQL the
# database of the tests (CHATCORE_TEST_POSTGRES_URL, default
# postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECS="${FUZZ_SECS:-20}"
BACKENDS="${FUZZ_BACKENDS:-sqlite postgres}"
PG_URL="${CHATCORE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
VENV=target/schemathesis-venv

if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
ST="$VENV/bin/schemathesis"

# CHATCORE_SERVER_BIN: fuzz another build (e.g. an older one, to compare).
BIN="${CHATCORE_SERVER_BIN:-}"
if [ -z "$BIN" ]; then
  cargo build -q -p chatcore-server
  BIN=target/debug/chatcore-server
fi
OPERATOR="op-fuzz-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
MASTER="$(head -c 32 /dev/urandom | base64)"
WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

summary=()
for backend in $BACKENDS; do
  port="$(free_port)"
  base="http://127.0.0.1:$port"
  schema_env=()
  case "$backend" in
    sqlite) db="sqlite://$WORK/fuzz.db?mode=rwc" ;;
    postgres)
      db="$PG_URL"
      pg_schema="fuzz_$(date +%s)_$$"
      schema_env=(CHATCORE_DATABASE_SCHEMA="$pg_schema")
      ;;
    *) echo "unknown backend $backend" >&2; exit 2 ;;
  esac
  # Failed authentications are not throttled here: the no-key run would
  # otherwise get the keyed runs from the same IP refused with 429.
  env CHATCORE_DATABASE_URL="$db" "${schema_env[@]}" CHATCORE_LISTEN="127.0.0.1:$port" \
    CHATCORE_MASTER_KEY="$MASTER" CHATCORE_OPERATOR_KEY="$OPERATOR" \
    CHATCORE_AUTH_FAILURES_PER_MINUTE=0 RUST_LOG=warn \
    "$BIN" serve >"$WORK/server-$backend.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do curl -fs "$base/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fs "$base/healthz" >/dev/null || { cat "$WORK/server-$backend.log"; exit 1; }

  H='content-type: application/json'
  admin="$(curl -fs "$base/v1/admin/tenants" -H "authorization: Bearer $OPERATOR" -H "$H" \
    -d '{"name": "Fuzz"}' | json_field '["admin_key"]')"
  read_key="$(curl -fs "$base/v1/api-keys" -H "authorization: Bearer $admin" -H "$H" \
    -d '{"name": "reader", "permissions": ["read"]}' | json_field '["key"]')"
  provider="$(curl -fs "$base/v1/providers" -H "authorization: Bearer $admin" -H "$H" \
    -d '{"provider": "mock", "name": "mock"}' | json_field '["id"]')"
  curl -fs "$base/v1/bots" -H "authorization: Bearer $admin" -H "$H" \
    -d "{\"name\": \"Fuzz\", \"slug\": \"fuzz\", \"provider_id\": \"$provider\", \"model\": \"echo\", \"is_public\": true}" >/dev/null

  # Valid (positive) bodies are what reach the database, so the admin key
  # gets a run of them alone; every key then gets the default mix of valid
  # and invalid cases with the coverage phase.
  for run in admin:positive:fuzzing:$((FUZZ_SECS * 3 / 2)) admin:all:coverage,fuzzing:$FUZZ_SECS \
             read:all:coverage,fuzzing:$FUZZ_SECS operator:all:coverage,fuzzing:$((FUZZ_SECS / 2)) \
             none:all:coverage,fuzzing:$((FUZZ_SECS / 2)); do
    IFS=: read -r who mode phases secs <<<"$run"
    auth=()
    case "$who" in
      admin) auth=(-H "Authorization: Bearer $admin") ;;
      read) auth=(-H "Authorization: Bearer $read_key") ;;
      operator) auth=(-H "Authorization: Bearer $OPERATOR") ;;
    esac
    echo "== schemathesis: $backend, $who key, $mode cases, ${secs}s"
    # One worker: schemathesis's coverage phase on CPython 3.11 can hit an
    # interpreter bug ("AST constructor recursion depth mismatch") when it
    # runs in several threads.
    "$ST" run "$base/openapi.json" "${auth[@]}" \
      --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
      --mode "$mode" --phases "$phases" --max-time "$secs" --workers 1 \
      --request-timeout 10 --seed 11 --warnings off \
      | tee "$WORK/st-$backend-$who-$mode.txt" | tail -n 25
  done

  # The server's own count of 5xx answers during the whole run.
  fivexx="$(curl -fs "$base/metrics" | awk '/^chatcore_http_requests_total/ && /status="5/ {n += $NF} END {print n + 0}')"
  requests="$(curl -fs "$base/metrics" | awk '/^chatcore_http_requests_total/ {n += $NF} END {print n + 0}')"
  cases="$(cat "$WORK"/st-"$backend"-*.txt | grep -Eo '[0-9]+ generated' | awk '{n += $1} END {print n + 0}')"
  summary+=("$backend: $cases generated cases, $requests requests, $fivexx 5xx answers")
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
  if [ "$backend" = postgres ]; then
    psql "$PG_URL" -qc "DROP SCHEMA IF EXISTS \"$pg_schema\" CASCADE" >/dev/null 2>&1 || true
  fi
  if [ "$fivexx" != 0 ]; then
    echo "server errors on $backend:" >&2
    grep -iE 'error|panic' "$WORK/server-$backend.log" | tail -n 40 >&2 || true
    printf '%s\n' "${summary[@]}"
    exit 1
  fi
done
echo "== fuzzing summary"
printf '%s\n' "${summary[@]}"
