#!/usr/bin/env bash
# Installs the pgvector extension into the local PostgreSQL when it is
# missing. Debian bookworm has no pgvector package for PostgreSQL 15, so this
# builds it from Debian trixie's source package (about 10 s).
set -euo pipefail

pg_major() { pg_config --version 2>/dev/null | sed -E 's/^PostgreSQL ([0-9]+).*/\1/'; }
have_vector() {
  psql -h 127.0.0.1 -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'" 2>/dev/null | grep -q 1
}

if have_vector; then
  echo "pgvector: already available"
  exit 0
fi

server_major="$(psql -h 127.0.0.1 -U postgres -d postgres -tAc 'SHOW server_version_num' | cut -c1-2)"
echo "pgvector: building for PostgreSQL ${server_major}"

if [ ! -f /etc/apt/sources.list.d/trixie-src.sources ]; then
  cat > /etc/apt/sources.list.d/trixie-src.sources <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
apt-get update -qq
before="$(dpkg-query -W -f='${Version}' "postgresql-${server_major}" 2>/dev/null || true)"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-server-dev-${server_major}" make gcc dpkg-dev >/dev/null
after="$(dpkg-query -W -f='${Version}' "postgresql-${server_major}" 2>/dev/null || true)"

work="$(mktemp -d)"
(
  cd "$work"
  apt-get source -qq --download-only pgvector >/dev/null
  dpkg-source -x --no-check ./pgvector_*.dsc src >/dev/null
  cd src
  make -s PG_CONFIG="/usr/lib/postgresql/${server_major}/bin/pg_config" OPTFLAGS="" >/dev/null
  make -s PG_CONFIG="/usr/lib/postgresql/${server_major}/bin/pg_config" install >/dev/null
)
rm -rf "$work"

if [ "$before" != "$after" ]; then
  echo "pgvector: postgresql-${server_major} went from '${before}' to '${after}': restarting it"
  pg_ctlcluster --skip-systemctl-redirect "${server_major}" main restart || true
  for _ in $(seq 1 60); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi

have_vector || { echo "pgvector: build finished but the extension is not available" >&2; exit 1; }
echo "pgvector: installed"
