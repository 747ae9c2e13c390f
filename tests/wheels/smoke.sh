#!/usr/bin/env bash
# Install ferroloop from a wheel alone into a new venv of PYTHON and run tests/smoke.py with it.
#
#   tests/wheels/smoke.sh PYTHON DIST
#
# pip may take nothing but a wheel from DIST (--no-index --only-binary :all:): no sdist, no build,
# no registry. The venv is made outside the checkout and the test runs from there, so the installed
# package is what is imported, not python/ferroloop. No Rust toolchain may be visible (`make wheel`
# runs this on the host with ~/.cargo/bin off PATH, and in the sid chroot with `sid.sh run-bare`,
# where the toolchain is not even mounted): a wheel that needed one to install would fail here.
set -euo pipefail
export PIP_DISABLE_PIP_VERSION_CHECK=1
python=$1
dist=$(cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
for tool in cargo rustc; do
  if command -v "$tool" >/dev/null; then
    echo "smoke.sh: $tool is visible ($(command -v "$tool")); the smoke test runs without a Rust toolchain" >&2
    exit 1
  fi
done
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --no-index --only-binary :all: --find-links "$dist" ferroloop
installed=$(cd "$work" && venv/bin/python -c 'import ferroloop, pathlib; print(pathlib.Path(ferroloop.__file__).parent)')
echo "wheel for $version: $(cd "$work" && venv/bin/python -m pip list --format freeze | grep '^ferroloop==') in $installed"
(cd "$work" && venv/bin/python "$here/../smoke.py") | sed "s/^/wheel for $version (glibc $(ldd --version | head -1 | awk '{print $NF}')): /"
