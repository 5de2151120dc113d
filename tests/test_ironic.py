"""configdrive's hardware manager inside the real ironic-python-agent 13.0 (.peers/ipa,
made by scripts/peers.sh): the ``write_image`` deploy step through IPA's own dispatch
(tests/ipa_agent.py), images served over HTTP from 127.0.0.1 onto a loop device, the
disk read back by sgdisk, blkid, od, xorriso and cloud-init's reader."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import (ROOT, add_partitions, cloud_init_read, loop_device, make_gpt_disk,
                      need_tool, out, run, sample_content)
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import RangeServer  # noqa: E402 (the benchmark's server: one for both)
from ipa_process import agent_venv  # noqa: E402

MiB = 1 << 20
PEER = ROOT / ".peers" / "ipa"
DRIVER = Path(__file__).with_name("ipa_agent.py")
DISK_GUID = "5b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
OURS, GENERIC = "ConfigDriveHardwareManager", "GenericHardwareManager"

pytestmark = pytest.mark.root


@pytest.fixture(scope="session")
def agent_python() -> Path:
    """The IPA venv with this checkout installed into a copy of its own (ipa_process.py)."""
    python = agent_venv(ROOT)
    if python is None:
        pytest.skip(f"{PEER} is missing: scripts/install.sh (scripts/peers.sh) makes it")
    return python


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A directory served over HTTP on 127.0.0.1 as ironic's conductor, Metal3's httpd and
    Swift serve images (byte ranges, a strong ETag), and its base URL."""
    root = tmp_path_factory.mktemp("www")
    with RangeServer(root) as base:
        yield root, base


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def images(served):
    """A whole-disk GPT image as raw and as qcow2 (made by qemu-img), served."""
    need_tool("sgdisk", "qemu-img")
    root, _ = served
    raw = make_gpt_disk(root / "disk.raw", DISK_GUID, seed=12)
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, root / "disk.qcow2")
    return raw


@pytest.fixture(scope="module")
def packed_drive():
    from configdrive.drives.builder import build
    from configdrive.formats.pack import pack
    return pack(build(sample_content(), None, format="iso"))


def sha(path: Path, algorithm: str) -> str:
    return hashlib.new(algorithm, path.read_bytes()).hexdigest()


def image_info(served, name: str, **extra) -> dict:
    root, base = served
    info = {"id": "img-" + name, "urls": [f"{base}/{name}"], "image_type": "whole-disk",
            "disk_format": name.rsplit(".", 1)[-1], "stream_raw_images": True,
            "os_hash_algo": "sha256", "os_hash_value": sha(root / name, "sha256")}
    info.update(extra)
    return {k: v for k, v in info.items() if v is not None}


def deploy_step(python: Path, dev: str, info: dict, configdrive=None, tmp_path=None,
                conf: str = "", kernel_params: dict | None = None) -> dict:
    """One write_image deploy step in a fresh agent process; the loop device is the node's
    root device by hint (node.properties.root_device.name)."""
    conf_file = tmp_path / "ipa.conf"
    # The agent's log on stderr; no waiting for a disk of the size IPA guesses a root disk
    # by (4 GiB) before the node's root device hint is known.
    conf_file.write_text("[DEFAULT]\nuse_stderr = true\nimage_download_connection_retries = 0\n"
                         "disk_wait_attempts = 1\ndisk_wait_delay = 0\n" + conf)
    node = {"uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123", "instance_info": {},
            "properties": {"root_device": {"name": dev}}, "driver_internal_info": {}}
    request = {"device": dev, "node": node, "image_info": info, "configdrive": configdrive,
               "kernel_params": kernel_params or {}}
    agent_tmp = tmp_path / "agent-tmp"      # the ramdisk's /tmp, where caches go
    agent_tmp.mkdir(exist_ok=True)
    proc = subprocess.run([python, DRIVER, conf_file], input=json.dumps(request).encode(),
                          capture_output=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(agent_tmp)})
    log = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, log
    outcome = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    outcome["log"] = log
    outcome["tmp_left"] = sorted(p.name for p in agent_tmp.iterdir())
    return outcome


def target(tmp_path, size=128 * MiB) -> Path:
    backing = tmp_path / "node-disk"
    backing.write_bytes(b"\x55" * size)
    return backing


def digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        while chunk := fp.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def config_partition(dev: str) -> dict:
    table = json.loads(out("sfdisk", "--json", dev))["partitiontable"]
    for part in table["partitions"]:
        probe = run("blkid", "-p", "-o", "export", "-O", part["start"] * 512, dev, check=False)
        found = dict(line.split("=", 1) for line in probe.stdout.decode().splitlines() if "=" in line)
        if found.get("LABEL", "").lower() == "config-2":
            return {**part, **found}
    raise AssertionError(f"no partition labelled config-2 on {dev}: {table}")


def assert_image_on_disk(dev: str, raw: Path) -> None:
    """What a user checks: the GPT is sound (sgdisk), the image's partitions are there
    with their bytes, the disk GUID is the image's."""
    assert "No problems found" in out("sgdisk", "-v", dev)
    printed = out("sgdisk", "-p", dev)
    assert DISK_GUID.upper() in printed.upper()
    with open(dev, "rb") as fp, open(raw, "rb") as src:
        fp.seek(MiB)
        src.seek(MiB)
        assert fp.read(10 * MiB) == src.read(10 * MiB)


def mbr_signature(dev: str) -> str:
    """The disk identifier as IPA reads it (hexdump of 4 bytes at 440), here with od."""
    return "0x" + out("od", "-A", "n", "-t", "x4", "-j", "440", "-N", "4", dev).strip()


def cloud_init_reads_config_partition(tmp_path, dev: str) -> None:
    part = config_partition(dev)
    assert part["TYPE"] == "iso9660"
    copy = tmp_path / "config-part.bin"
    with open(dev, "rb") as src:
        src.seek(part["start"] * 512)
        copy.write_bytes(src.read(part["size"] * 512))
    dest = tmp_path / "extracted"
    run("xorriso", "-osirrox", "on", "-indev", copy, "-extract", "/", dest)
    seen = cloud_init_read(dest)
    expected = sample_content()
    assert seen["metadata"]["uuid"] == expected.meta_data["uuid"]
    assert seen["userdata"] == expected.user_data


@pytest.mark.parametrize("name,algorithm", [("disk.qcow2", "sha256"), ("disk.raw", "sha512"),
                                            ("disk.qcow2", "sha512"), ("disk.raw", "sha256")])
@pytest.mark.parametrize("with_drive", [False, True], ids=["no-drive", "drive"])
def test_whole_disk_image_through_ipa_dispatch(agent_python, served, images, packed_drive,
                                               tmp_path, name, algorithm, with_drive):
    need_tool("sgdisk", "sfdisk", "blkid", "xorriso")
    root, _ = served
    info = image_info(served, name, os_hash_algo=algorithm,
                      os_hash_value=sha(root / name, algorithm))
    with loop_device(target(tmp_path)) as dev:
        outcome = deploy_step(agent_python, dev, info, packed_drive if with_drive else None,
                              tmp_path)
        assert outcome["status"] == "SUCCEEDED", outcome["log"]
        assert outcome["written_by"] == [OURS]
        assert outcome["managers"][0] == OURS and GENERIC in outcome["managers"]
        root_uuid = mbr_signature(dev)
        assert outcome["result"]["deploy_result"] == {
            "result": f"prepare_image: image ({info['id']}) written to device {dev} "
                      f"root_uuid={root_uuid}"}
        assert outcome["partition_uuids"] == {"root uuid": root_uuid}
        assert outcome["cached_image_id"] == info["id"]
        assert_image_on_disk(dev, images)
        assert "MiB/s" in outcome["log"]       # our figures, in IPA's log
        assert outcome["tmp_left"] == []       # no cached image left in the ramdisk's RAM
        if with_drive:
            cloud_init_reads_config_partition(tmp_path, dev)
        else:
            assert "config-2" not in out("blkid", "-p", dev).lower()


@pytest.mark.parametrize("style", ["gnu", "bsd", "one-line"])
def test_checksum_file_url(agent_python, served, images, tmp_path, style):
    """The legacy ``checksum`` as the URL of a checksum file (typed by its length)."""
    root, base = served
    digest512 = sha(root / "disk.qcow2", "sha512")
    text = {"gnu": f"{'0' * 128}  other.img\n{digest512}  disk.qcow2\n",
            "bsd": f"SHA512 (other.img) = {'0' * 128}\nSHA512 (disk.qcow2) = {digest512}\n",
            "one-line": f"{digest512}  disk.qcow2\n"}[style]
    (root / f"SUMS-{style}").write_text(text)
    info = image_info(served, "disk.qcow2", os_hash_algo=None, os_hash_value=None,
                      checksum=f"{base}/SUMS-{style}")
    with loop_device(target(tmp_path)) as dev:
        outcome = deploy_step(agent_python, dev, info, tmp_path=tmp_path)
        assert outcome["status"] == "SUCCEEDED", outcome["log"]
        assert outcome["written_by"] == [OURS]
        assert_image_on_disk(dev, images)


@pytest.mark.parametrize("name", ["disk.qcow2", "disk.raw"])
def test_legacy_checksum_typed_by_length(agent_python, served, images, tmp_path, name):
    root, _ = served
    info = image_info(served, name, os_hash_algo=None, os_hash_value=None,
                      checksum=sha(root / name, "sha256"))
    with loop_device(target(tmp_path)) as dev:
        outcome = deploy_step(agent_python, dev, info, tmp_path=tmp_path)
        assert outcome["status"] == "SUCCEEDED", outcome["log"]
        assert outcome["written_by"] == [OURS]


@pytest.mark.parametrize("name,stream", [("disk.qcow2", True), ("disk.raw", False)])
def test_checksum_mismatch_without_a_cache_leaves_an_empty_table(agent_python, served, images,
                                                                 tmp_path, name, stream):
    """What IPA downloads whole into its cache first (a qcow2; raw without
    stream_raw_images) is streamed onto the disk like the rest, nothing kept in the
    ramdisk: a mismatch is known before the disk's first MiB goes down, and the disk is
    left with an empty partition table, never the unverified image."""
    info = image_info(served, name, stream_raw_images=stream, os_hash_value="ab" * 32)
    with loop_device(target(tmp_path)) as dev:
        outcome = deploy_step(agent_python, dev, info, tmp_path=tmp_path)
        assert outcome["status"] == "FAILED"
        assert outcome["error"]["type"] == "ImageChecksumError"
        assert outcome["error"]["details"].startswith("configdrive: ")
        assert "ab" * 32 in outcome["error"]["details"]
        assert "empty partition table" in outcome["error"]["details"]
        assert "root" not in out("sgdisk", "-p", dev)
        assert outcome["tmp_left"] == []
        good = image_info(served, name, stream_raw_images=stream)
        outcome = deploy_step(agent_python, dev, good, tmp_path=tmp_path)
        assert outcome["status"] == "SUCCEEDED", outcome["log"]
        assert_image_on_disk(dev, images)
        assert "spooling" not in outcome["log"]


def test_raw_checksum_mismatch_leaves_no_bootable_disk(agent_python, served, images, tmp_path):
    """A raw image is streamed (as IPA streams it): a mismatch is known at its end, before
    the first MiB goes down; the disk is left with an empty partition table, not the image."""
    info = image_info(served, "disk.raw", os_hash_value="cd" * 32)
    with loop_device(target(tmp_path)) as dev:
        outcome = deploy_step(agent_python, dev, info, tmp_path=tmp_path)
        assert outcome["status"] == "FAILED"
        assert outcome["error"]["type"] == "ImageChecksumError"
        assert "empty partition table" in outcome["error"]["details"]
        assert "root" not in out("sgdisk", "-p", dev)


@pytest.mark.parametrize("mutation", ["backing-file", "raw-declared-qcow2", "cluster-bits"])
def test_hostile_image_fails_the_step_with_the_disk_untouched(agent_python, served, images,
                                                             tmp_path, mutation):
    need_tool("qemu-img")
    root, _ = served
    name = f"hostile-{mutation}.qcow2"
    if mutation == "backing-file":
        run("qemu-img", "create", "-f", "qcow2", "-F", "raw", "-b", "/etc/shadow", root / name, "16M")
    else:
        shutil.copy(root / "disk.qcow2", root / name)
        if mutation == "cluster-bits":
            with open(root / name, "r+b") as fp:
                fp.seek(20)
                fp.write((40).to_bytes(4, "big"))
    info = image_info(served, name)
    if mutation == "raw-declared-qcow2":
        info["disk_format"] = "raw"
    with loop_device(target(tmp_path)) as dev:
        before = digest(dev)
        outcome = deploy_step(agent_python, dev, info, tmp_path=tmp_path)
        assert outcome["status"] == "FAILED"
        assert outcome["error"]["type"] == "InvalidImage"
        assert outcome["error"]["details"].startswith("configdrive: ")
        assert digest(dev) == before


def _hostile_drive(kind: str, root: Path, base: str) -> tuple[str, str]:
    """(the configdrive argument, what the error must say)."""
    import base64
    import gzip
    if kind == "not-base64":
        return "not base64 at all!", "the configdrive argument: not base64"
    if kind == "gzip-bomb":       # 100 MiB of zeros in about 100 KiB
        bomb = base64.b64encode(gzip.compress(bytes(100 * MiB), compresslevel=9)).decode()
        return bomb, "inflates past the 67108864-byte limit"
    big = root / "huge-drive.iso"
    with open(big, "wb") as fp:
        fp.truncate(65 * MiB)
    return f"{base}/huge-drive.iso", "larger than the 67108864-byte limit"


@pytest.mark.parametrize("kind", ["not-base64", "gzip-bomb", "url-over-64MiB"])
def test_bad_config_drive_refuses_before_the_image_is_written(agent_python, served, images,
                                                              tmp_path, kind):
    root, base = served
    argument, says = _hostile_drive(kind, root, base)
    info = image_info(served, "disk.raw")
    with loop_device(target(tmp_path)) as dev:
        before = digest(dev)
        outcome = deploy_step(agent_python, dev, info, argument, tmp_path)
        assert outcome["status"] == "FAILED"
        assert outcome["error"]["type"] == "DeploymentError"
        assert outcome["error"]["details"].startswith("configdrive: ")
        assert says in outcome["error"]["details"]
        assert "\n" not in outcome["error"]["details"]
        assert digest(dev) == before


def test_partition_image_falls_back_to_ipas_generic_manager(agent_python, served, images, tmp_path):
    """IPA's generic manager takes over a partition image (and writes it its own way)."""
    root, _ = served
    fs = root / "root.img"
    run("truncate", "-s", "8M", fs)
    run("mkfs.ext4", "-q", "-F", "-L", "part-root", fs)
    info = image_info(served, "root.img", disk_format="raw", image_type="partition",
                      root_mb=16, swap_mb=0, ephemeral_mb=0, ephemeral_format=None,
                      preserve_ephemeral=False, node_uuid="1be26c0b-03f2-4d2e-ae87-c02d7f33c123")
    info["ephemeral_format"] = None
    with loop_device(target(tmp_path)) as dev:
        outcome = deploy_step(agent_python, dev, info, tmp_path=tmp_path)
        assert "image_type partition: IPA lays out the partitions" in outcome["log"]
        assert "IPA's generic write_image takes over" in outcome["log"]
        assert outcome["written_by"] == [GENERIC], outcome["log"]
        assert outcome["status"] == "SUCCEEDED", outcome["log"]


@pytest.mark.parametrize("conf,declined", [
    ("[configdrive]\nwrite_image = false\n", None),
    ("", "disk_format 'vmdk'"),
])
def test_turned_off_or_declined_means_ipa_writes(agent_python, served, images, tmp_path, conf, declined):
    """Off in the agent's config file: our manager is not even ranked, IPA writes. A
    format only qemu-img converts is declined, naming it, and IPA takes it."""
    need_tool("qemu-img")
    root, _ = served
    if declined:
        run("qemu-img", "convert", "-f", "raw", "-O", "vmdk", images, root / "disk.vmdk")
        info = image_info(served, "disk.vmdk", stream_raw_images=False)
    else:
        info = image_info(served, "disk.raw")
    with loop_device(target(tmp_path)) as dev:
        outcome = deploy_step(agent_python, dev, info, tmp_path=tmp_path, conf=conf)
        if declined:
            assert declined in outcome["log"]
            assert outcome["written_by"] == [GENERIC] or outcome["status"] == "FAILED"
            assert OURS in outcome["managers"]
        else:
            assert OURS not in outcome["managers"]
            assert outcome["written_by"] == [GENERIC], outcome["log"]
            assert outcome["status"] == "SUCCEEDED", outcome["log"]


def test_turned_off_on_the_kernel_command_line(agent_python, served, images, tmp_path):
    with loop_device(target(tmp_path)) as dev:
        outcome = deploy_step(agent_python, dev, image_info(served, "disk.raw"), tmp_path=tmp_path,
                              kernel_params={"ipa-configdrive-write-image": "0"})
        assert OURS not in outcome["managers"]
        assert outcome["written_by"] == [GENERIC], outcome["log"]


@pytest.mark.parametrize("where", ["config", "kernel"])
def test_fallback_off_fails_the_step_with_the_reason(agent_python, served, images, tmp_path, where):
    info = image_info(served, "disk.raw", disk_format="vhd")
    with loop_device(target(tmp_path)) as dev:
        before = digest(dev)
        if where == "config":
            outcome = deploy_step(agent_python, dev, info, tmp_path=tmp_path,
                                  conf="[configdrive]\nfallback = false\n")
        else:
            outcome = deploy_step(agent_python, dev, info, tmp_path=tmp_path,
                                  kernel_params={"ipa-configdrive-fallback": "false"})
        assert outcome["status"] == "FAILED"
        assert "disk_format 'vhd'" in outcome["error"]["details"]
        assert "[configdrive] fallback" in outcome["error"]["details"]
        assert digest(dev) == before


def test_redeploy_over_a_disk_whose_old_partitions_the_kernel_still_shows(
        agent_python, served, images, packed_drive, tmp_path):
    """The node's disk still carries the last OS's partitions in the kernel's view
    (``partx -a``, as this kernel does not scan loop devices): they are replaced by the
    new table's, and the new config partition gets its node."""
    backing = target(tmp_path)
    run("sgdisk", "-n", "1:2048:+50M", "-n", "2:0:+60M", backing)
    with loop_device(backing) as dev:
        add_partitions(dev)
        outcome = deploy_step(agent_python, dev, image_info(served, "disk.qcow2"), packed_drive,
                              tmp_path)
        assert outcome["status"] == "SUCCEEDED", outcome["log"]
        part = config_partition(dev)
        lsblk = json.loads(out("lsblk", "--json", "-b", "-o", "NAME,START,SIZE", dev))
        kernel = {int(c["start"]): int(c["size"]) for c in lsblk["blockdevices"][0]["children"]}
        table = json.loads(out("sfdisk", "--json", dev))["partitiontable"]["partitions"]
        assert kernel == {p["start"]: p["size"] * 512 for p in table}
        assert kernel[part["start"]] == part["size"] * 512
        assert "could not" not in outcome["log"]


def test_redeploy_refused_when_an_old_partition_is_held(agent_python, served, images, tmp_path):
    backing = target(tmp_path)
    run("sgdisk", "-n", "1:2048:+50M", "-n", "2:0:+60M", backing)
    with loop_device(backing) as dev:
        add_partitions(dev)
        before = digest(dev)
        holder = subprocess.Popen(["sh", "-c", f"exec 3<{dev}p2; echo ready; exec sleep 120"],
                                  stdout=subprocess.PIPE)
        try:
            assert holder.stdout.readline() == b"ready\n"
            outcome = deploy_step(agent_python, dev, image_info(served, "disk.raw"),
                                  tmp_path=tmp_path)
        finally:
            holder.kill()
            holder.wait()
        assert outcome["status"] == "FAILED"
        assert outcome["error"]["type"] == "ImageWriteError"
        assert f"{dev}p2 is open in process {holder.pid} (sleep)" in outcome["error"]["details"]
        assert digest(dev) == before


class _Proxy(_QuietHandler):
    """An HTTP proxy that serves its directory whatever host the absolute URL names."""

    requests: list = []

    def translate_path(self, path):
        from urllib.parse import urlsplit
        _Proxy.requests.append(path)
        return super().translate_path(urlsplit(path).path)


def test_image_info_proxies_are_used(agent_python, served, images, tmp_path):
    """The image server's name only resolves through the proxy image_info names."""
    root, _ = served
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Proxy, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        info = image_info(served, "disk.qcow2", urls=["http://images.invalid/disk.qcow2"],
                          proxies={"http": f"http://127.0.0.1:{server.server_address[1]}"})
        with loop_device(target(tmp_path)) as dev:
            outcome = deploy_step(agent_python, dev, info, tmp_path=tmp_path)
            assert outcome["status"] == "SUCCEEDED", outcome["log"]
            assert outcome["written_by"] == [OURS]
            assert_image_on_disk(dev, images)
        assert "http://images.invalid/disk.qcow2" in _Proxy.requests
    finally:
        server.shutdown()


def test_unreachable_url_passes_to_the_next(agent_python, served, images, tmp_path):
    _, base = served
    info = image_info(served, "disk.raw", urls=[f"{base}/missing.raw", f"{base}/disk.raw"])
    with loop_device(target(tmp_path)) as dev:
        outcome = deploy_step(agent_python, dev, info, tmp_path=tmp_path)
        assert outcome["status"] == "SUCCEEDED", outcome["log"]
        assert "missing.raw: HTTP 404" in outcome["log"]
        assert_image_on_disk(dev, images)


def test_no_url_reachable_is_ipas_download_error(agent_python, served, images, tmp_path):
    _, base = served
    info = image_info(served, "disk.raw", urls=[f"{base}/a.raw", f"{base}/b.raw"])
    with loop_device(target(tmp_path)) as dev:
        before = digest(dev)
        outcome = deploy_step(agent_python, dev, info, tmp_path=tmp_path)
        assert outcome["status"] == "FAILED"
        assert outcome["error"]["type"] == "ImageDownloadError"
        assert "a.raw: HTTP 404" in outcome["error"]["details"]
        assert "b.raw: HTTP 404" in outcome["error"]["details"]
        assert "not retried: the server answered 404" in outcome["error"]["details"]
        assert digest(dev) == before


def test_4kn_disk_gets_a_vfat_config_drive(agent_python, served, packed_drive, tmp_path):
    """On a disk with 4096-byte sectors an ISO config drive cannot be mounted: the packed
    ISO ironic sent is rebuilt as vfat with 4096-byte sectors, label config-2."""
    need_tool("sgdisk", "sfdisk", "blkid", "mcopy")
    root, _ = served
    image = root / "disk-4k.raw"
    image.write_bytes(bytes(24 * MiB))
    with loop_device(image, sector_size=4096) as dev:
        run("sgdisk", "-U", DISK_GUID, "-n", "1:256:+6M", "-c", "1:root", dev)
    info = image_info(served, "disk-4k.raw")
    with loop_device(target(tmp_path), sector_size=4096) as dev:
        outcome = deploy_step(agent_python, dev, info, packed_drive, tmp_path)
        assert outcome["status"] == "SUCCEEDED", outcome["log"]
        assert outcome["written_by"] == [OURS]
        assert "No problems found" in out("sgdisk", "-v", dev)
        table = json.loads(out("sfdisk", "--json", dev))["partitiontable"]
        assert table["sectorsize"] == 4096
        found = {}
        for part in table["partitions"]:
            probe = run("blkid", "-p", "-o", "export", "-O", part["start"] * 4096, dev, check=False)
            found = dict(line.split("=", 1) for line in probe.stdout.decode().splitlines() if "=" in line)
            if found.get("TYPE") == "vfat":
                break
        assert found["TYPE"] == "vfat" and found["LABEL"].lower() == "config-2", table
        dest = tmp_path / "extracted"
        dest.mkdir()
        run("mcopy", "-s", "-i", f"{dev}@@{part['start'] * 4096}", "::/openstack", dest)
        seen = cloud_init_read(dest)
        assert seen["metadata"]["uuid"] == sample_content().meta_data["uuid"]


@pytest.fixture(scope="module")
def served_tls(served, tmp_path_factory):
    """The same directory over HTTPS on 127.0.0.1, with a self-signed certificate."""
    import ssl
    need_tool("openssl")
    root, _ = served
    keys = tmp_path_factory.mktemp("tls")
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keys / "key.pem",
        "-out", keys / "cert.pem", "-days", "2", "-subj", "/CN=127.0.0.1",
        "-addext", "subjectAltName=IP:127.0.0.1")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(keys / "cert.pem", keys / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", keys / "cert.pem"
    server.shutdown()


@pytest.mark.parametrize("conf,ok", [
    ("cafile = {cert}\n", True),        # the agent's CA file is trusted
    ("insecure = true\n", True),        # ipa-insecure
    ("", False),                        # an unknown certificate is refused
])
def test_agent_tls_settings_apply(agent_python, served, served_tls, images, tmp_path, conf, ok):
    base, cert = served_tls
    info = image_info(served, "disk.qcow2", urls=[f"{base}/disk.qcow2"])
    with loop_device(target(tmp_path)) as dev:
        before = digest(dev)
        outcome = deploy_step(agent_python, dev, info, tmp_path=tmp_path,
                              conf="[DEFAULT]\n" + conf.format(cert=cert))
        if ok:
            assert outcome["status"] == "SUCCEEDED", outcome["log"]
            assert outcome["written_by"] == [OURS]
            assert_image_on_disk(dev, images)
        else:
            assert outcome["status"] == "FAILED"
            assert outcome["error"]["type"] == "ImageDownloadError"
            assert "CERTIFICATE_VERIFY_FAILED" in outcome["error"]["details"]
            assert digest(dev) == before
