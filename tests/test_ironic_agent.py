"""Acceptance: configdrive's hardware manager inside the real ironic-python-agent 13.0
process (tests/ipa_process.py: the agent's own REST API, dispatch, standby extension and
log; a test hardware manager offers a loop device as the install device), driven over
HTTP as ironic's conductor drives it: deploy.get_deploy_steps, deploy.execute_deploy_step
with the write_image step, then standby.get_partition_uuids. Every case runs twice, on
the same inputs: through our manager, and through IPA's own write_image (our manager
turned off with its option, ``[configdrive] write_image = false``), and the command
results are compared. The disk is read back with sgdisk, sfdisk, blkid and cmp."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path

import pytest

from conftest import ROOT, loop_device, make_gpt_disk, need_tool, out, run, sample_content
from ipa_process import Agent
from test_ironic import agent_python  # noqa: F401 (the fixture: this checkout in IPA's venv)

sys.path.insert(0, str(ROOT / "benchmarks"))
from common import RangeServer  # noqa: E402

MiB = 1 << 20
DISK_GUID = "0c4c6d1e-8a2b-4f3c-9d5e-6f7a8b9c0d1e"
NODE = {"uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123", "instance_info": {},
        "properties": {}, "driver_internal_info": {}}
IMAGE_SIZE = 48 * MiB      # the image; the node's disk is larger (the GPT is moved to its end)
DISK_SIZE = 128 * MiB

pytestmark = pytest.mark.root


class Mirrors(RangeServer):
    """The image server: byte ranges and a strong ETag as ironic's conductor, Metal3's
    httpd and Swift serve them; ``cut[NAME] = N``: the next N answers for NAME that
    stream across the middle of the file end there, the connection closed (a mirror
    that drops mid-stream). Counted when the cut happens: an answer the client closed
    early (it only wanted the first bytes) is not one."""

    def __init__(self, root):
        super().__init__(root)
        self.cut: dict[str, int] = {}
        self.unavailable: dict[str, int] = {}     # NAME: answer 503 this many times
        self._local = threading.local()
        self._lock = threading.Lock()

    def serve(self, handler) -> None:
        name = handler.path.lstrip("/")
        with self._lock:
            busy = self.unavailable.get(name, 0) > 0
            if busy:
                self.unavailable[name] -= 1
        if busy:
            handler.send_error(503)
            return
        path = self.root / name
        self._local.name, self._local.handler = name, handler
        self._local.middle = path.stat().st_size // 2 if path.is_file() else 0
        self._local.began = None
        super().serve(handler)

    def body(self, piece: bytes, start: int, end: int, bounded: bool) -> bytes:
        local = self._local
        if local.began is None:
            local.began = start
        if local.began < local.middle <= start + len(piece):
            with self._lock:
                cutting = self.cut.get(local.name, 0) > 0
                if cutting:
                    self.cut[local.name] -= 1
            if cutting:
                local.handler.close_connection = True
                half = piece[: local.middle - start]
                local.handler.wfile.write(half)
                local.handler.wfile.flush()
                raise ConnectionResetError("cut by the test")
        return piece


@pytest.fixture(scope="module")
def mirrors(tmp_path_factory):
    """(root, base URL, server), with a raw and a qcow2 whole-disk image."""
    need_tool("sgdisk", "sfdisk", "blkid", "cmp", "qemu-img", "unshare")
    root = tmp_path_factory.mktemp("mirror")
    raw = make_gpt_disk(root / "disk.raw", DISK_GUID, seed=21, size=IMAGE_SIZE)
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, root / "disk.qcow2")
    # For the mirrors that drop mid-stream: 40 MiB of data, so that an answer the
    # client closed early never reaches the middle of the file through socket buffers.
    big = make_gpt_disk(root / "big.raw", DISK_GUID, seed=22, size=IMAGE_SIZE)
    with open(big, "r+b") as fp:
        fp.seek(12 * MiB)
        fp.write(os.urandom(30 * MiB))
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", big, root / "big.qcow2")
    server = Mirrors(root)
    yield root, server.url, server
    server.__exit__()


@pytest.fixture(scope="module")
def packed_drive():
    from configdrive.drives.builder import build
    from configdrive.formats.pack import pack
    return pack(build(sample_content(), None, format="iso"))


def image_info(mirrors, name: str, *, urls=None, checksum=None, **extra) -> dict:
    root, base, _ = mirrors
    info = {"id": "img-" + name.replace(".", "-"), "urls": urls or [f"{base}/{name}"],
            "image_type": "whole-disk", "disk_format": name.rsplit(".", 1)[-1],
            "stream_raw_images": True, "os_hash_algo": "sha256",
            "os_hash_value": checksum or hashlib.sha256((root / name).read_bytes()).hexdigest(),
            "node_uuid": NODE["uuid"]}
    info.update(extra)
    return info


def node_disk(tmp_path: Path, who: str) -> Path:
    backing = tmp_path / f"node-disk-{who}"
    backing.write_bytes(b"\x55" * DISK_SIZE)     # an old disk's bytes, never zeros
    return backing


def run_side(agent_python, tmp_path, who: str, steps, **agent_options) -> dict:
    """Start an agent (ours or IPA's path) on a fresh loop device; ``steps(agent, dev)``
    drives it; returns what it returned plus the agent's log, the disk as the tools read
    it, and the agent's peak RSS."""
    with loop_device(node_disk(tmp_path, who)) as dev:
        with Agent(agent_python, tmp_path, dev, ours=(who == "ours"), **agent_options) as agent:
            found = steps(agent, dev)
            found["rss"] = agent.peak_rss()
            found["log"] = agent.log()
            found["tmp_left"] = sorted(p.name for p in agent.tmpdir.iterdir())
        found["dev"] = dev
        found["disk"] = disk_state(dev)
    return found


def deploy_once(image, configdrive=None):
    def steps(agent, dev):
        result = agent.write_image(NODE, image, configdrive)
        uuids = agent.partition_uuids()
        return {"result": result, "uuids": uuids, "root_uuid": disk_identifier(dev)}
    return steps


def disk_identifier(dev: str) -> str:
    """The disk identifier as IPA reads it (hexdump -s 440 -n 4), here with od."""
    return "0x" + out("od", "-A", "n", "-t", "x4", "-j", "440", "-N", "4", dev).strip()


def disk_state(dev: str) -> dict:
    """What an operator would look at: sgdisk's verdict, the partitions (sfdisk), each
    partition's filesystem label (blkid -p at its offset)."""
    verify = run("sgdisk", "-v", dev, check=False).stdout.decode()
    table = json.loads(run("sfdisk", "--json", dev, check=False).stdout.decode() or "{}")
    parts = table.get("partitiontable", {}).get("partitions", [])
    for part in parts:
        probe = run("blkid", "-p", "-o", "export", "-O", part["start"] * 512, dev, check=False)
        found = dict(line.split("=", 1) for line in probe.stdout.decode().splitlines() if "=" in line)
        part["fs"], part["label"] = found.get("TYPE"), found.get("LABEL")
    return {"verify": verify, "partitions": parts,
            "guid": table.get("partitiontable", {}).get("id")}


def config_partitions(state: dict) -> list:
    return [p for p in state["partitions"] if (p["label"] or "").lower() == "config-2"]


def image_bytes_on_disk(dev: str, raw: Path) -> None:
    """cmp: the image's own partitions are on the disk byte for byte."""
    table = json.loads(out("sfdisk", "--json", str(raw)))["partitiontable"]["partitions"]
    for part in table:
        offset, length = part["start"] * 512, part["size"] * 512
        run("cmp", "-n", length, "-i", f"{offset}:{offset}", dev, raw)


def assert_deployed(found: dict, raw: Path, with_drive: bool) -> None:
    state = found["disk"]
    assert "No problems found" in state["verify"], state["verify"]
    assert state["guid"].lower() == DISK_GUID
    names = [p.get("name") for p in state["partitions"]]
    assert names[:2] == ["root", "data"]
    assert len(config_partitions(state)) == (1 if with_drive else 0), state["partitions"]


def succeeded(found: dict) -> dict:
    result = found["result"]
    assert result["command_status"] == "SUCCEEDED", \
        (result.get("command_error"), found.get("log", "")[-4000:])
    return result


@pytest.mark.parametrize("name", ["disk.qcow2", "disk.raw"])
def test_write_image_as_ipa_does(agent_python, mirrors, packed_drive, tmp_path, name):
    """qcow2 and raw (streamed), with a config drive: the disk holds the image and one
    config partition cloud-init reads; the command result and the partition UUIDs are
    IPA's own, word for word (same image, so the same disk identifier); nothing stays in
    the agent's temporary directory."""
    root, _, _ = mirrors
    info = image_info(mirrors, name)
    ours = run_side(agent_python, tmp_path, "ours", deploy_once(dict(info), packed_drive))
    ipa = run_side(agent_python, tmp_path, "ipa", deploy_once(dict(info), packed_drive))
    for found in (ours, ipa):
        succeeded(found)
        assert_deployed(found, root / "disk.raw", with_drive=True)
    ours_result, ipa_result = succeeded(ours)["command_result"], succeeded(ipa)["command_result"]
    # The two agents wrote to different loop devices: the device is the one difference.
    ipa_text = ipa_result["deploy_result"]["result"].replace(ipa["dev"], ours["dev"])
    assert ours_result["deploy_result"] == {"result": ipa_text}
    assert ours_result["deploy_result"] == {
        "result": f"prepare_image: image ({info['id']}) written to device {ours['dev']} "
                  f"root_uuid={ours['root_uuid']}"}
    assert ours_result["deploy_step"] == ipa_result["deploy_step"]
    assert ours["uuids"]["command_result"] == ipa["uuids"]["command_result"] == \
        {"root uuid": ours["root_uuid"]}
    assert "configdrive: wrote" in ours["log"] and "MiB/s" in ours["log"]
    assert ours["tmp_left"] == []
    # The agent's peak resident set (VmHWM) with our manager writing, against IPA's own
    # path (whose qemu-img is a process of its own): within 15 MiB.
    assert ours["rss"] <= ipa["rss"] + 15 * MiB, (ours["rss"] >> 20, ipa["rss"] >> 20)
    with loop_device(tmp_path / "node-disk-ours") as dev:
        image_bytes_on_disk(dev, root / "disk.raw")


@pytest.mark.parametrize("name", ["disk.qcow2", "disk.raw"])
def test_wrong_checksum(agent_python, mirrors, tmp_path, name):
    """Both fail with ImageChecksumError. Ours says why it does not download again (IPA
    does, image_download_connection_retries times: the same bytes, the same mismatch),
    and leaves an empty partition table; IPA leaves the old disk (qcow2) or the
    unverified image (raw, streamed)."""
    info = image_info(mirrors, name, checksum="ab" * 32)
    ours = run_side(agent_python, tmp_path, "ours", deploy_once(dict(info)), retries=2)
    ipa = run_side(agent_python, tmp_path, "ipa", deploy_once(dict(info)), retries=2)
    for found in (ours, ipa):
        assert found["result"]["command_status"] == "FAILED"
        assert found["result"]["command_error"]["type"] == "ImageChecksumError"
    details = ours["result"]["command_error"]["details"]
    assert "ab" * 32 in details and "not retried" in details and "\n" not in details
    assert ours["log"].count("Image download failed") == 0
    assert ipa["log"].count("Image download failed") == 2        # IPA: 2 retries
    assert ours["disk"]["partitions"] == []                      # an empty table
    assert "No problems found" in ours["disk"]["verify"]
    assert ours["uuids"]["command_result"] == {}


def test_404_then_a_good_mirror(agent_python, mirrors, tmp_path):
    """The first URL answers 404, the second serves the image. A 4xx is not retried
    (IPA 13 neither: bug #2098146), and we pass on to the next URL; IPA 13 stops at the
    first 4xx (ImageDownloadFatalError) and the deploy fails."""
    _, base, _ = mirrors
    info = image_info(mirrors, "disk.qcow2", urls=[f"{base}/gone.qcow2", f"{base}/disk.qcow2"])
    ours = run_side(agent_python, tmp_path, "ours", deploy_once(dict(info)), retries=2)
    ipa = run_side(agent_python, tmp_path, "ipa", deploy_once(dict(info)), retries=2)
    succeeded(ours)
    assert "gone.qcow2: HTTP 404" in ours["log"] and "not retried" in ours["log"]
    assert "retry 1 of" not in ours["log"]
    assert_deployed(ours, mirrors[0] / "disk.raw", with_drive=False)
    # IPA 13 retries the 404 all the same (its check ``resp and resp.status_code < 500``
    # reads a 4xx Response as false), then stops at it: the second URL is never tried.
    assert ipa["result"]["command_status"] == "FAILED"
    assert ipa["result"]["command_error"]["type"] == "ImageDownloadFatalError"
    assert "404" in ipa["result"]["command_error"]["details"]
    assert ipa["log"].count("Unable to connect to") == 2


@pytest.mark.parametrize("name", ["big.raw", "big.qcow2"])
def test_a_mirror_that_drops_mid_stream(agent_python, mirrors, tmp_path, name):
    """The only mirror closes the connection half-way through its first answer: a
    transient failure, retried after image_download_connection_retry_interval, as IPA
    retries it. Both succeed, with the same result."""
    info = image_info(mirrors, name)
    found = {}
    for who in ("ours", "ipa"):
        mirrors[2].cut[name] = 1
        found[who] = run_side(agent_python, tmp_path, who, deploy_once(dict(info)), retries=2)
        assert mirrors[2].cut[name] == 0       # it did drop
        succeeded(found[who])
        assert_deployed(found[who], mirrors[0] / "big.raw", with_drive=False)
    assert "retry 1 of 2" in found["ours"]["log"]
    ours, ipa = (found[w]["result"]["command_result"]["deploy_result"]["result"] for w in ("ours", "ipa"))
    assert ours == ipa.replace(found["ipa"]["dev"], found["ours"]["dev"])


def test_a_mirror_that_answers_503_twice(agent_python, mirrors, tmp_path):
    """A 5xx is transient: retried, image_download_connection_retries times, as IPA
    retries it. Both succeed with the same result."""
    info = image_info(mirrors, "disk.qcow2")
    found = {}
    for who in ("ours", "ipa"):
        mirrors[2].unavailable["disk.qcow2"] = 2
        found[who] = run_side(agent_python, tmp_path, who, deploy_once(dict(info)), retries=2)
        assert mirrors[2].unavailable["disk.qcow2"] == 0
        succeeded(found[who])
        assert_deployed(found[who], mirrors[0] / "disk.raw", with_drive=False)
    assert "HTTP 503" in found["ours"]["log"] and "retry 2 of 2" in found["ours"]["log"]
    ours, ipa = (found[w]["result"]["command_result"]["deploy_result"]["result"] for w in ("ours", "ipa"))
    assert ours == ipa.replace(found["ipa"]["dev"], found["ours"]["dev"])


def test_a_mirror_that_always_drops_then_a_good_one(agent_python, mirrors, tmp_path):
    """The first mirror always drops mid-stream; the second is good. We pass on to the
    next URL; IPA only does so when a URL cannot be opened, so it retries the first
    mirror until its retries are spent and fails."""
    _, base, server = mirrors
    (mirrors[0] / "flaky.raw").write_bytes((mirrors[0] / "big.raw").read_bytes())
    info = image_info(mirrors, "big.raw", urls=[f"{base}/flaky.raw", f"{base}/big.raw"])
    server.cut["flaky.raw"] = 100
    ours = run_side(agent_python, tmp_path, "ours", deploy_once(dict(info)), retries=1)
    ipa = run_side(agent_python, tmp_path, "ipa", deploy_once(dict(info)), retries=1)
    server.cut["flaky.raw"] = 0
    succeeded(ours)
    assert "flaky.raw" in ours["log"] and "connection closed" in ours["log"]
    assert_deployed(ours, mirrors[0] / "big.raw", with_drive=False)
    assert ipa["result"]["command_status"] == "FAILED"


def test_redeploy_in_one_agent(agent_python, mirrors, packed_drive, tmp_path):
    """A second write_image of the same image id in the same agent (the conductor retries
    a deployment) after a later step scribbled over the root partition. We write the
    image again and place the config drive: the image byte for byte, one config
    partition, the same command result as the first time. IPA skips the write (its
    cached_image_id: the scribble stays) and adds the config drive again: its lookup of
    the existing config partition reads labels from udev's database (lsblk -o LABEL),
    empty where udev does not run, as here, so it makes a second one, and on this disk
    there is no room for it: the step fails."""
    root, _, _ = mirrors
    info = image_info(mirrors, "disk.qcow2")
    scribble = b"\xde\xad" * (MiB // 2)

    def twice(agent, dev):
        first = agent.write_image(NODE, dict(info), packed_drive)
        assert first["command_status"] == "SUCCEEDED", first
        with open(dev, "r+b") as fp:           # a later deploy step fails half-way
            fp.seek(MiB)
            fp.write(scribble)
        second = agent.write_image(NODE, dict(info), packed_drive)
        with open(dev, "rb") as fp:
            fp.seek(MiB)
            kept = fp.read(len(scribble)) == scribble
        return {"result": second, "first": first, "uuids": agent.partition_uuids(),
                "root_uuid": disk_identifier(dev), "scribble_kept": kept}

    ours = run_side(agent_python, tmp_path, "ours", twice)
    ipa = run_side(agent_python, tmp_path, "ipa", twice)
    result = succeeded(ours)
    assert result["command_result"] == ours["first"]["command_result"]
    assert "written again" in ours["log"]
    assert not ours["scribble_kept"]
    assert_deployed(ours, root / "disk.raw", with_drive=True)
    assert len(config_partitions(ours["disk"])) == 1
    with loop_device(tmp_path / "node-disk-ours") as dev:
        image_bytes_on_disk(dev, root / "disk.raw")
    assert ipa["scribble_kept"]
    assert ipa["result"]["command_status"] == "FAILED"
    assert "Failed to create config drive" in ipa["result"]["command_error"]["details"]
