"""Hostile NoCloud inputs: a network-config given to build, and seeds given to inspect,
validate and extract. YAML is the attacker's here, so parsing must stay bounded."""

from __future__ import annotations

import json

import pytest

from harness import HANG_GUARD, RSS_GUARD, refused, run_measured

BAD_NETWORK_CONFIG = {
    "version-3": b"version: 3\nethernets: {}\n",
    "version-string": b"version: '2'\n",
    "network-wrapper-version-0": b"network:\n  version: 0\n",
    "list": b"- version: 2\n",
    "scalar": b"just text\n",
    "empty": b"",
    "bad-yaml": b"version: 2\nethernets: {eth0: [\n",
    "not-utf8": b"version: 2\n# \xff\xfe\n",
    "alias-bomb": b"a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
        b"%c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]\n" % ((c, c) + (c - 1,) * 9)
        for c in range(ord("b"), ord("j"))) + b"version: 2\n",
}


@pytest.mark.parametrize("name", sorted(BAD_NETWORK_CONFIG))
@pytest.mark.parametrize("fmt", ["nocloud", "nocloud-vfat"])
def test_build_refuses_network_config(tmp_path, name, fmt):
    config = tmp_path / "network-config"
    config.write_bytes(BAD_NETWORK_CONFIG[name])
    out = tmp_path / "seed.img"
    refused("build", "-o", out, "--format", fmt, "--network-config", config, watch=[config],
            names=str(config))
    assert not out.exists()


@pytest.mark.parametrize("name", ["alias-bomb", "bad-yaml", "not-utf8"])
def test_seed_meta_data_is_read_bounded(tmp_path, name):
    """inspect shows a seed whose meta-data does not parse (without its fields), within
    the guards; validate names the file."""
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "meta-data").write_bytes(BAD_NETWORK_CONFIG[name].replace(b"version: 2", b"instance-id: i-1"))
    (seed / "user-data").write_bytes(b"")
    shown = run_measured("inspect", "--json", seed)
    assert shown.returncode == 0 and shown.peak_rss < RSS_GUARD and shown.seconds < HANG_GUARD
    assert json.loads(shown.stdout)["uuid"] is None
    checked = run_measured("validate", seed)
    assert checked.returncode == 1 and checked.stderr.count("\n") == 1
    assert f"{seed}/meta-data: /: " in checked.stderr and "Traceback" not in checked.stderr
