#!/usr/bin/env bash
# OpenAI's official SDKs against chatcore's OpenAI-compatible API: the
# `openai` package from PyPI (pytest) and from npm (node's test runner),
# against a spawned RELEASE server on SQLite whose bots use the offline mock
# provider. Cases: plain, streamed with usage, multi-turn, tools (single,
# parallel, streamed, results sent back), json_schema, an image part, the
# SDKs' exception classes, models.list(); each checks the stored turn.
#
#   bash .ci/sdk.sh
#
# CHATCORE_SERVER_BIN: test another build. Installs into target/ (a
# virtualenv and an npm prefix); nothing is downloaded but the packages.
set -euo pipefail
cd "$(dirname "$0")/.."

OPENAI_PY="${OPENAI_PY_VERSION:-3.57.0}"
OPENAI_NODE="${OPENAI_NODE_VERSION:-6.49.0}"
VENV=target/sdk-venv
NODE_DIR=target/sdk-node

if [ ! -x "$VENV/bin/pytest" ] || ! "$VENV/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_PY')" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "openai==$OPENAI_PY" "pytest==8.4.2"
fi
if [ ! -f "$NODE_DIR/node_modules/openai/package.json" ] \
  || ! grep -q "\"version\": \"$OPENAI_NODE\"" "$NODE_DIR/node_modules/openai/package.json"; then
  mkdir -p "$NODE_DIR"
  [ -f "$NODE_DIR/package.json" ] || echo '{"name": "chatcore-sdk-tests", "private": true, "type": "module"}' > "$NODE_DIR/package.json"
  npm install --prefix "$NODE_DIR" --no-audit --no-fund --silent "openai@$OPENAI_NODE"
fi

BIN="${CHATCORE_SERVER_BIN:-}"
if [ -z "$BIN" ]; then
  cargo build -q --release -p chatcore-server
  BIN=target/release/chatcore-server
fi

WORK="$(mktemp -d)"
SERVER_PID=""
FAKE_PID=""
cleanup() {
  if [ -n "$FAKE_PID" ]; then kill "$FAKE_PID" 2>/dev/null || true; fi
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
port="$(free_port)"
base="http://127.0.0.1:$port"
# Anthropic's and Gemini's wire formats, for the bots whose vendor's tool
# format matters.
fake_port="$(free_port)"
python3 sdk-tests/vendor_fakes.py "$fake_port" &
FAKE_PID=$!
OPERATOR="op-sdk-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
env CHATCORE_DATABASE_URL="sqlite://$WORK/sdk.db?mode=rwc" CHATCORE_LISTEN="127.0.0.1:$port" \
  CHATCORE_MASTER_KEY="$(head -c 32 /dev/urandom | base64)" CHATCORE_OPERATOR_KEY="$OPERATOR" \
  CHATCORE_EGRESS_ALLOW="127.0.0.1:$fake_port" RUST_LOG=warn "$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -fs "$base/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs "$base/healthz" >/dev/null || { cat "$WORK/server.log"; exit 1; }

field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
H='content-type: application/json'
post() { # path key body
  curl -fsS "$base$1" -H "authorization: Bearer $2" -H "$H" -d "$3"
}
tenant="$(post /v1/admin/tenants "$OPERATOR" '{"name": "SDK tests"}')"
admin="$(echo "$tenant" | field '["admin_key"]')"
slug="$(echo "$tenant" | field '["tenant"]["slug"]')"
mock="$(post /v1/providers "$admin" '{"provider": "mock", "name": "mock"}' | field '["id"]')"
# A provider that reads no images (it is never called: the image is refused first).
compat="$(post /v1/providers "$admin" '{"provider": "openai_compatible", "name": "local", "base_url": "https://llm.example.com/v1", "api_key": "sk-unused-0000"}' | field '["id"]')"
post /v1/bots "$admin" "{\"name\": \"Echo\", \"slug\": \"echo\", \"provider_id\": \"$mock\", \"model\": \"echo\", \"system_prompt\": \"You repeat.\"}" >/dev/null
post /v1/bots "$admin" "{\"name\": \"Helper\", \"slug\": \"helper\", \"provider_id\": \"$mock\", \"model\": \"assistant\"}" >/dev/null
fake="http://127.0.0.1:$fake_port"
claude="$(post /v1/providers "$admin" "{\"provider\": \"anthropic\", \"name\": \"claude\", \"base_url\": \"$fake\", \"api_key\": \"sk-ant-fake-0000\"}" | field '["id"]')"
gemini="$(post /v1/providers "$admin" "{\"provider\": \"google\", \"name\": \"gemini\", \"base_url\": \"$fake\", \"api_key\": \"gm-fake-0000\"}" | field '["id"]')"
post /v1/bots "$admin" "{\"name\": \"Claude\", \"slug\": \"claude\", \"provider_id\": \"$claude\", \"model\": \"claude-sonnet-4-5\"}" >/dev/null
post /v1/bots "$admin" "{\"name\": \"Gemini\", \"slug\": \"gemini\", \"provider_id\": \"$gemini\", \"model\": \"gemini-2.5-flash\"}" >/dev/null
post /v1/bots "$admin" "{\"name\": \"No images\", \"slug\": \"no-images\", \"provider_id\": \"$compat\", \"model\": \"local-model\"}" >/dev/null
key() { post /v1/api-keys "$admin" "$1" | field '["key"]'; }
export CHATCORE_BASE="$base" CHATCORE_ADMIN_KEY="$admin" CHATCORE_TENANT_SLUG="$slug"
CHATCORE_CHAT_KEY="$(key '{"name": "sdk", "permissions": ["chat"]}')"
CHATCORE_READ_KEY="$(key '{"name": "reader", "permissions": ["read"]}')"
CHATCORE_LIMITED_KEY="$(key '{"name": "limited", "permissions": ["chat"], "rate_limit_rpm": 1}')"
CHATCORE_LIMITED_KEY_NODE="$(key '{"name": "limited-node", "permissions": ["chat"], "rate_limit_rpm": 1}')"
export CHATCORE_CHAT_KEY CHATCORE_READ_KEY CHATCORE_LIMITED_KEY CHATCORE_LIMITED_KEY_NODE

status=0
echo "== openai (Python $OPENAI_PY)"
"$VENV/bin/pytest" -q -p no:cacheprovider sdk-tests/python || status=1
echo "== openai (Node $OPENAI_NODE)"
cp sdk-tests/node/openai-sdk.test.mjs "$NODE_DIR/"
node --test "$NODE_DIR/openai-sdk.test.mjs" || status=1
if [ "$status" != 0 ]; then
  echo "server log:" >&2
  tail -n 40 "$WORK/server.log" >&2
fi
exit "$status"
