#!/usr/bin/env bash
# The real peers the tests hold us against, each in a virtualenv of its own under .peers/
# (their pins conflict with each other and must not leak into .venv, which tests what
# `pip install .` ships). Each line: a venv name, then what pip installs into it.
# Idempotent: a venv whose package list is unchanged is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

PEERS=(
  # name   packages (exact versions: the facts in ../shared/spec/integrations.md are theirs)
  "nova nova==34.0.0"
  "sdk openstacksdk==4.22.0"
  "glean glean==1.25.1"
  # ipa: the real agent our hardware manager plugs into (tests/test_ironic.py), plus our
  # own dependencies; the tests install configdrive itself there with --no-deps.
  "ipa     ironic-python-agent==13.0.0 pycdlib>=1.14 pyfatfs>=1.0.5 jsonschema>=4.18 sh>=2.0 zstandard>=0.21"
)

PY=${PYTHON:-python3}
for line in "${PEERS[@]}"; do
  read -r name pkgs <<<"$line"
  venv=".peers/$name"
  stamp="$venv/.installed"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$pkgs" ]; then
    continue
  fi
  echo "peers.sh: $name: pip install $pkgs" >&2
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install -q $pkgs
  printf '%s' "$pkgs" >"$stamp"
done
