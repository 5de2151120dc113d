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
