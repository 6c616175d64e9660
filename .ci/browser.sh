#!/usr/bin/env bash
# Browser tests of the chat widget (issue 14): the release server, Debian's
# Chromium (never a downloaded browser) driven by playwright-core from npm,
# installed under target/ (nothing is committed). Screenshots are kept in
# target/widget-screenshots/ as CI artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] || { echo "no Chromium at $CHROMIUM (apt-get install -y chromium)" >&2; exit 1; }
command -v node >/dev/null || { echo "node is needed (apt-get install -y nodejs npm)" >&2; exit 1; }

cargo build --release -p chatcore-server

# playwright-core only: it never downloads a browser.
PW_DIR=target/browser-tests
PW_VERSION=1.65.1
if [ ! -f "$PW_DIR/node_modules/playwright-core/package.json" ] \
  || ! grep -q "\"version\": \"$PW_VERSION\"" "$PW_DIR/node_modules/playwright-core/package.json"; then
  mkdir -p "$PW_DIR"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund \
    --prefix "$PW_DIR" "playwright-core@$PW_VERSION"
fi

rm -rf target/widget-screenshots
CHATCORE_BIN="$PWD/target/release/chatcore-server" \
CHROMIUM="$CHROMIUM" \
PW_MODULES="$PWD/$PW_DIR/node_modules" \
SCREENSHOTS="$PWD/target/widget-screenshots" \
  node widget/tests/widget.test.mjs
