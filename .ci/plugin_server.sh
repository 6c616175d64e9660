#!/usr/bin/env bash
# A plugin author's own server (examples/plugin_server.rs: the library's
# builder with their provider registered, served by chatcore-server) answers
# one real HTTP chat request, and the answer comes from the plugin provider.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q -p chatcore-examples --example plugin_server
bin="${CARGO_TARGET_DIR:-target}/debug/examples/plugin_server"
out=$(mktemp)
# Port 0: the example binds a free port and prints it.
CHATCORE_DATABASE_URL=sqlite::memory: CHATCORE_LISTEN=127.0.0.1:0 "$bin" >"$out" &
pid=$!
stop() { kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$out"; }
trap stop EXIT
for _ in $(seq 1 60); do
  grep -q '^{.*"listen"' "$out" && break
  kill -0 "$pid" 2>/dev/null || { echo "plugin_server exited before it listened" >&2; exit 1; }
  sleep 1
done
# The one JSON line it prints (log lines may come before it).
line=$(grep -m1 '^{.*"listen"' "$out") || { echo "plugin_server printed no address" >&2; cat "$out" >&2; exit 1; }
field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$line" "$1"; }
listen=$(field listen)
key=$(field key)
bot=$(field bot)
reply=$(curl -sS --max-time 30 "http://$listen/v1/chat" \
  -H "authorization: Bearer $key" -H 'content-type: application/json' \
  -d "{\"bot_id\": \"$bot\", \"message\": \"hello plugin\"}")
python3 - "$reply" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r.get("content") == "YOU SAID: HELLO PLUGIN", r
assert r.get("provider") == "shout", r
print("plugin_server: the plugin provider answered:", r["content"])
PY
