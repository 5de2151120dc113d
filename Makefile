# The two entry points the README opens with. Each installs everything first.
.PHONY: install demo test e2e bench

install:
	bash scripts/install.sh

demo: install
	.venv/bin/configdrive build --example -o example-config-drive.iso
	.venv/bin/configdrive inspect example-config-drive.iso

# pyproject.toml's addopts leave the end-to-end boots (marker e2e) out of this run.
test: install
	# .venv/bin/pytest (not python -m) so the tests import the installed package, not the checkout
	.venv/bin/pytest -q -ra tests

# Boots a real Debian guest under QEMU with our drives and checks what cloud-init did.
# The guest is built on the first run (~2 min, needs root and the Debian mirror) and
# cached in tests/.cache/; each boot then takes about a minute.
e2e: install
	.venv/bin/pytest -q -ra -m e2e tests/e2e

bench: install
	.venv/bin/python benchmarks/run.py
