#!/usr/bin/env bash
# CPython 3.14 and 3.15 for ferroloop's tests, in a Debian sid chroot.
#
# Debian's python3.14/python3.15 packages need glibc 2.38+, newer than the host's, so they run in a
# chroot (../shared/PYTHONS.md in the workplace has the measurements). The chroot is made once, on
# first use, outside the checkout (FERROLOOP_SID, default /opt/python/sid-chroot); the host's Rust
# toolchain and the checkout are bind-mounted into it at the same paths, so a build inside writes
# where a build outside would.
#
#   tests/pythons/sid.sh create           make the chroot when it is missing (root; ~1 min, ~1 GB)
#   tests/pythons/sid.sh run CMD...       run CMD in the checkout inside the chroot (binds, then unbinds)
#   tests/pythons/sid.sh run-bare CMD...  the same without the Rust toolchain: ~/.cargo and ~/.rustup are
#                                         not bound in, so nothing there can build (the wheels' smoke tests)
#
# sid moves daily, so packages are installed by name, not pinned; `create` records what it got in
# $ROOT/ferroloop-packages.txt.
set -euo pipefail

ROOT=${FERROLOOP_SID:-/opt/python/sid-chroot}
MIRROR=${FERROLOOP_SID_MIRROR:-http://deb.debian.org/debian}
CHECKOUT=$(cd "$(dirname "$0")/../.." && pwd)
PACKAGES=python3.14,python3.14-dev,python3.14-venv,libpython3.14-testsuite
PACKAGES+=,python3.15,python3.15-dev,python3.15-venv,libpython3.15-testsuite
# make and a C compiler for the build; the integration suite's servers, which it starts itself;
# tmux, the terminal tests/test_top.py drives `python -m ferroloop top` in.
PACKAGES+=,gcc,libc6-dev,make,ca-certificates,procps,postgresql,redis-server,openssl,tmux

need_root() {
  [ "$(id -u)" = 0 ] || { echo "sid.sh: the chroot needs root (debootstrap, mount, chroot)" >&2; exit 1; }
}

create() {
  [ -x "$ROOT/usr/bin/python3.15" ] && [ -e "$ROOT/.ferroloop-complete" ] && return 0
  need_root
  command -v debootstrap >/dev/null || {
    echo "sid.sh: installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
  }
  echo "sid.sh: creating the Debian sid chroot in $ROOT (once; about a minute)"
  rm -rf "$ROOT.partial"
  mkdir -p "$(dirname "$ROOT")"
  debootstrap --variant=minbase --include="$PACKAGES" sid "$ROOT.partial" "$MIRROR" >"$ROOT.log" 2>&1 \
    || { tail -20 "$ROOT.log" >&2; echo "sid.sh: debootstrap failed (log: $ROOT.log)" >&2; exit 1; }
  # pip inside uses the host's certificate bundle (the same registries the host reaches).
  cp /etc/ssl/certs/ca-certificates.crt "$ROOT.partial/etc/ssl/certs/ca-certificates.crt"
  chroot "$ROOT.partial" dpkg-query -W -f '${Package} ${Version}\n' >"$ROOT.partial/ferroloop-packages.txt"
  touch "$ROOT.partial/.ferroloop-complete"
  rm -rf "$ROOT"
  mv "$ROOT.partial" "$ROOT"
  grep -E '^python3\.1[45] ' "$ROOT/ferroloop-packages.txt"
}

# Each run mounts in a mount namespace of its own (unshare -m): the mounts are seen by nothing else
# and vanish with the run, however it ends, and runs at the same time do not disturb one another.
inside() {  # the run's body, in its own mount namespace; $1: "rust" or "bare"
  local home=${HOME:-/root} src toolchain=$1
  shift
  local binds=(/dev /dev/pts "$CHECKOUT")
  local path=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
  local rust_env=()
  if [ "$toolchain" = rust ]; then
    binds+=("${CARGO_HOME:-$home/.cargo}" "${RUSTUP_HOME:-$home/.rustup}")
    path="${CARGO_HOME:-$home/.cargo}/bin:$path"
    rust_env=(CARGO_HOME="${CARGO_HOME:-$home/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$home/.rustup}")
  fi
  mount --make-rprivate /
  mount -t proc proc "$ROOT/proc"
  for src in "${binds[@]}"; do
    mkdir -p "$ROOT$src"
    mount --bind "$src" "$ROOT$src"
  done
  mount -t tmpfs tmpfs "$ROOT/dev/shm"
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
  local quoted
  printf -v quoted '%q ' "$@"
  # A clean environment but for what a build and the tests read: HOME, the cargo and rustup
  # homes, the target directory and the project's own FERROLOOP_* settings.
  local keep=() var
  for var in $(compgen -e); do
    case $var in FERROLOOP_*|CARGO_TARGET_DIR|PYTEST_ADDOPTS) keep+=("$var=${!var}") ;; esac
  done
  exec chroot "$ROOT" /usr/bin/env -i HOME="$home" PATH="$path" TERM="${TERM:-dumb}" LANG=C.UTF-8 \
    "${rust_env[@]}" "${keep[@]}" FERROLOOP_IN_SID=1 bash -c "cd $(printf %q "$PWD") && $quoted"
}

run() {  # $1: "rust" or "bare", then the command
  create
  need_root
  exec unshare --mount "$CHECKOUT/tests/pythons/sid.sh" _inside "$@"
}

case "${1:-}" in
  create) create ;;
  run) shift; run rust "$@" ;;
  run-bare) shift; run bare "$@" ;;
  _inside) shift; inside "$@" ;;
  *) echo "usage: $0 create | run CMD... | run-bare CMD..." >&2; exit 2 ;;
esac
