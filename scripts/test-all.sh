#!/usr/bin/env bash
# The whole suite (what `make test` runs): the QEMU boots (tests/e2e, about 15 minutes of
# software emulation, one core) run beside everything else (one core, mostly I/O and
# Python), so the two halves overlap on this 2-core kind of machine instead of adding up.
# The boots' output is kept in a log and printed after the rest; the status is a failure
# when either half failed.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p tests/.cache
log=tests/.cache/e2e-pytest.log
.venv/bin/pytest -q -ra -p no:cacheprovider -m e2e tests/e2e >"$log" 2>&1 &
boots=$!
.venv/bin/pytest -q -ra tests
rest=$?
wait "$boots"
e2e=$?
echo
echo "== end-to-end boots (tests/e2e, ran alongside; log: $log) =="
cat "$log"
[ "$rest" -eq 0 ] && [ "$e2e" -eq 0 ]
