# The two entry points the README opens with. Each installs everything first.
.PHONY: install demo test e2e bench

install:
	bash scripts/install.sh

demo: install
	.venv/bin/configdrive build --example -o example-config-drive.iso
	.venv/bin/configdrive inspect example-config-drive.iso

test: install
	# .venv/bin/pytest (not python -m) so the tests import the installed package, not the checkout
	.venv/bin/pytest -q -ra tests

bench: install
	.venv/bin/python benchmarks/run.py
