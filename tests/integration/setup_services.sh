#!/usr/bin/env bash
# Installs the servers the integration suite starts itself: PostgreSQL (initdb, pg_ctl) and
# redis-server, from Debian's packages. Needs root when they are missing; does nothing when present.
set -euo pipefail

missing=()
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && ! command -v initdb >/dev/null; then
  missing+=(postgresql)
fi
command -v redis-server >/dev/null || missing+=(redis-server)

if [ ${#missing[@]} -eq 0 ]; then
  echo "integration services: PostgreSQL and redis-server are installed"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "integration services: missing ${missing[*]}; run this as root, or install the Debian packages" \
    "postgresql and redis-server (or set FERROLOOP_SKIP_SERVICES=1 to skip the tests that need them)" >&2
  exit 1
fi
echo "integration services: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq postgresql redis-server >/dev/null
