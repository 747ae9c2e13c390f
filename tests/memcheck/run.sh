#!/usr/bin/env bash
# `make test-memcheck`: ferroloop's transport, socket and TLS tests under valgrind memcheck, on the
# debug build installed (not editable) in its own venv. Fails on any invalid read or write, invalid
# free or bad system-call buffer anywhere in the process, and on any use of an uninitialised value
# outside CPython (cpython.supp says what is suppressed and why). Leaks are not checked.
#
#   tests/memcheck/run.sh VENV [PYTEST ARGS...]
#
# Installs Debian's valgrind when it is missing (needs root then). First runs a canary that writes
# past a heap block, which must fail: a checker that cannot fail proves nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=$1
shift
python=$venv/bin/python

if ! command -v valgrind >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "memcheck: valgrind is missing; run this as root, or install the Debian package valgrind" >&2
    exit 1
  fi
  echo "memcheck: installing valgrind"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi

# valgrind's exit status for "errors found", distinct from pytest's own statuses.
status=86
# PYTHONMALLOC=malloc: every Python object is its own malloc block, so valgrind sees its bounds
# (pymalloc's arenas would hide overruns). Reports go to descriptor 3, the terminal: pytest
# captures 1 and 2, and with -v each report appears under the test that caused it.
export PYTHONMALLOC=malloc
# A test's bound on waiting for something that should happen soon (conftest.WAIT) is for a loop at
# full speed: under valgrind, and two lanes of `make test` beside it, a TLS handshake alone can take
# seconds. A broken loop is still caught: pytest-timeout stops any test after its 60 s.
export FERROLOOP_TEST_TIME_SCALE=3
valgrind=(valgrind -q --error-exitcode=$status --leak-check=no --num-callers=40
  --suppressions=tests/memcheck/cpython.supp --log-fd=3)

canary='import ctypes; b = ctypes.create_string_buffer(64); ctypes.memset(ctypes.addressof(b) + 60, 0, 8)'
set +e
"${valgrind[@]}" "$python" -c "$canary" 3>/dev/null
rc=$?
set -e
if [ $rc != $status ]; then
  echo "memcheck: FAILED: the canary's write past a heap block was not reported (exit status $rc)" >&2
  exit 1
fi
echo "memcheck: the canary's write past a heap block is reported, as it must be"

start=$SECONDS
set +e
"${valgrind[@]}" "$python" -m pytest -v -p no:cacheprovider "$@" 3>&2
rc=$?
set -e
echo "memcheck: $((SECONDS - start)) s under valgrind"
if [ $rc = $status ]; then
  echo "memcheck: FAILED: valgrind reported memory errors (above, under the test that caused each)" >&2
elif [ $rc != 0 ]; then
  echo "memcheck: FAILED: pytest exited with status $rc" >&2
fi
exit $rc
