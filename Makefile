# The two entry points the README opens with. Each installs what it needs first: the
# demo only the package (python3-venv and `pip install .`), the tests everything else too
# (the Debian tools the tests read images back with, QEMU and the guests' tools, the
# peers); scripts/install.sh prints the list it works from.
# Tests run with .venv/bin/pytest (not python -m) so that they import the installed
# package, not the checkout: what `pip install .` ships is what is tested.
.PHONY: install install-core demo test quick e2e bench

install:
	bash scripts/install.sh test

install-core:
	bash scripts/install.sh core

demo: install-core
	.venv/bin/configdrive build --example -o example-config-drive.iso
	.venv/bin/configdrive inspect example-config-drive.iso

# The whole suite, end-to-end boots included: the boots run beside the rest (see the script).
test: install
	bash scripts/test-all.sh

# Everything but the boots (a few minutes).
quick: install
	.venv/bin/pytest -q -ra tests

# Only the boots: a real Debian guest under QEMU with our drives, checked for what
# cloud-init did. The guests (bookworm, trixie) are built on the first run (~5 min, need
# root and the Debian mirror) and cached in tests/.cache/; each boot then takes 1-2 minutes.
e2e: install
	.venv/bin/pytest -q -ra -m e2e tests/e2e

bench: install
	.venv/bin/python benchmarks/run.py
