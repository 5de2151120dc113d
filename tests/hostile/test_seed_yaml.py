"""Hostile NoCloud inputs: a network-config given to build, and seeds given to inspect,
validate and extract. YAML is the attacker's here, so parsing must stay bounded."""

from __future__ import annotations

import json

import pytest

import bombs
from harness import HANG_GUARD, RSS_GUARD, assert_refused, refused, run_measured

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
    # Values SafeLoader's resolver types and its constructors then fail on (a traceback
    # once): cloud-init fails on them too, so they are refused in one line.
    "bad-date": b"version: 2\nx: 2001-13-01\n",
    "bad-timestamp": b"version: 2\nx: 2001-02-30 25:00:00\n",
    "int-tag-text": b"version: 2\nx: !!int abc\n",
    "int-tag-empty": b"version: 2\nx: !!int ''\n",
    "bool-tag-maybe": b"version: 2\nx: !!bool maybe\n",
    "float-tag-text": b"version: 2\nx: !!float abc\n",
    "int-5000-digits": b"version: 2\nx: " + b"9" * 5000 + b"\n",
    # YAML 1.1's base 60: PyYAML multiplies an ever larger integer per part (quadratic).
    "base-60-long": b"version: 2\nx: 1" + b":0" * 800_000 + b"\n",
    # Two byte order marks: the decode takes one, PyYAML's scanner the second; the
    # pre-scan once took the second for a scalar running to the end and counted nothing.
    "two-boms-wide": b"\xef\xbb\xbf\xef\xbb\xbf[" + b"{}," * 700_000 + b"{}]\n",
    "two-boms-deep": b"\xef\xbb\xbf\xef\xbb\xbf" + b"[" * 3000 + b"]" * 3000 + b"\n",
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


# -- YAML that is small to send and large to parse (issue 20) ----------------------------
# 40 KB of "[" kept PyYAML's scanner busy for 64-105 s (it checks every open flow level
# for every token); docscan counts depth and values first, in one pass.

YAML_BOMBS = bombs.yaml_bombs(4 << 20)
REFUSED_BY_COUNT = ("more than 100000 YAML values", "YAML nested deeper than 64 levels",
                    "YAML alias refused")
CPU_BOUND = 10.0


@pytest.mark.parametrize("name", sorted(YAML_BOMBS))
def test_build_refuses_yaml_bombs_by_count(tmp_path, name):
    config = tmp_path / "network-config"
    config.write_bytes(YAML_BOMBS[name])
    out = tmp_path / "seed.img"
    outcome = run_measured("build", "-o", out, "--format", "nocloud", "--network-config", config)
    line = assert_refused(outcome, names=f"{config}: ")
    assert any(reason in line for reason in REFUSED_BY_COUNT), line
    assert outcome.cpu < CPU_BOUND, f"{outcome.cpu:.1f} s of CPU"
    assert not out.exists()


@pytest.mark.parametrize("name", ["flow-open", "flow-long", "block-mappings-deep", "line-separators-deep",
                                  "block-many-keys"])
@pytest.mark.parametrize("file", ["network-config", "meta-data"])
def test_seeds_holding_yaml_bombs_are_read_bounded(tmp_path, name, file):
    """inspect shows the seed (without the fields of a meta-data it cannot read); validate
    refuses it in one line naming the file and the limit; both under 10 s of CPU."""
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "meta-data").write_bytes(b"instance-id: i-1\n")
    (seed / "user-data").write_bytes(b"")
    (seed / file).write_bytes(YAML_BOMBS[name])
    shown = run_measured("inspect", "--json", seed)
    assert shown.returncode == 0 and shown.peak_rss < RSS_GUARD and shown.cpu < CPU_BOUND, shown.stderr
    assert json.loads(shown.stdout)["uuid"] == (None if file == "meta-data" else "i-1")
    checked = run_measured("validate", seed)
    assert checked.returncode == 1 and checked.stderr.count("\n") == 1 and checked.cpu < CPU_BOUND
    assert checked.stderr.startswith(f"error: {seed}/{file}: /: byte "), checked.stderr
    assert any(reason in checked.stderr for reason in REFUSED_BY_COUNT), checked.stderr


def test_a_large_real_network_config_still_builds_and_validates(tmp_path):
    """1,000 interfaces with addresses, routes and DNS (216 KiB, comments and flow
    collections included) pass, as cloud-init takes them."""
    config = tmp_path / "network-config"
    config.write_bytes(bombs.large_network_config(1000))
    seed = tmp_path / "seed.iso"
    for args in (("build", "-o", seed, "--format", "nocloud", "--network-config", config,
                  "--user-data", config), ("validate", seed), ("inspect", seed)):
        outcome = run_measured(*args)
        assert outcome.returncode == 0 and "error" not in outcome.stderr, (args, outcome.stderr)
        assert outcome.cpu < CPU_BOUND and outcome.peak_rss < RSS_GUARD, args


@pytest.mark.parametrize("name", ["flow-open", "block-many-keys", "quote-in-plain-block"])
def test_deploy_and_inject_refuse_yaml_bombs_before_touching_the_target(tmp_path, name):
    config = tmp_path / "network-config"
    config.write_bytes(YAML_BOMBS[name])
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(range(256)) * 4096)
    for command in (("deploy", "--device", disk), ("inject", disk)):
        line = refused(*command, "--hostname", "h", "--network-config", config, watch=[disk, config],
                       names=f"{config}: ")
        assert any(reason in line for reason in REFUSED_BY_COUNT), line
