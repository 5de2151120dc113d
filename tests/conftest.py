"""Shared test helpers: running the tools we did not write, cloud-init's own reader, and
loop devices. Every image a test makes is read back by one of these, not only by us."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"   # Debian's cloud-init lives in the system interpreter


def run(*cmd, check=True, input=None, env=None) -> subprocess.CompletedProcess:
    """Run a command, capture text output; a failure shows the command and its stderr."""
    proc = subprocess.run([str(c) for c in cmd], input=input, capture_output=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n"
                             f"{proc.stdout.decode(errors='replace')}\n{proc.stderr.decode(errors='replace')}")
    return proc


def out(*cmd, **kw) -> str:
    return run(*cmd, **kw).stdout.decode(errors="replace")


def need_tool(*names: str) -> None:
    """Skip (with the reason) when a tool is not installed; scripts/install.sh test installs
    all of them, so a skip here means the machine could not have them."""
    for name in names:
        if shutil.which(name) is None and not Path("/usr/sbin", name).exists():
            pytest.skip(f"{name} is not installed")


def configdrive(*args, check=True, input=None, env=None) -> subprocess.CompletedProcess:
    """The installed command, as users run it (a separate process)."""
    exe = Path(sys.executable).with_name("configdrive")
    return run(exe, *args, check=check, input=input, env=env)


def cloud_init_read(directory: Path) -> dict:
    """cloud-init's own config drive reader (Debian's package) on an extracted drive.

    Returns the parts a user checks: metadata, userdata, network and vendor data, files.
    """
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip("system python3 with cloud-init is not installed")
    code = textwrap.dedent("""
        import json, sys, base64
        from cloudinit.sources import DataSourceConfigDrive as ds
        r = ds.read_config_drive(sys.argv[1])
        def enc(v):
            if isinstance(v, bytes):
                return {"__bytes__": base64.b64encode(v).decode()}
            if isinstance(v, dict):
                return {str(k): enc(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [enc(x) for x in v]
            return v
        print(json.dumps(enc(r)))
    """)
    proc = run(SYSTEM_PYTHON, "-c", code, directory, check=False)
    if proc.returncode != 0 and b"No module named 'cloudinit'" in proc.stderr:
        pytest.skip("Debian's cloud-init package is not installed")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")

    def dec(v):
        if isinstance(v, dict):
            if set(v) == {"__bytes__"}:
                import base64
                return base64.b64decode(v["__bytes__"])
            return {k: dec(x) for k, x in v.items()}
        if isinstance(v, list):
            return [dec(x) for x in v]
        return v
    return dec(json.loads(proc.stdout))


def is_root() -> bool:
    return os.geteuid() == 0


@contextlib.contextmanager
def loop_device(path: Path, sector_size: int = 512, partscan: bool = False):
    """Attach ``path`` to a loop device for the duration; skip where none can be had.

    This kernel does not scan partition tables on loop devices by itself: tests that need
    partition nodes call ``partx -a`` (see :func:`add_partitions`)."""
    if not is_root():
        pytest.skip("loop devices need root")
    args = ["losetup", "--find", "--show", f"--sector-size={sector_size}"]
    if partscan:
        args.append("--partscan")
    proc = run(*args, path, check=False)
    if proc.returncode != 0:
        pytest.skip(f"no loop device: {proc.stderr.decode(errors='replace').strip()}")
    dev = proc.stdout.decode().strip()
    try:
        yield dev
    finally:
        run("partx", "-d", dev, check=False)
        for _ in range(5):
            if run("losetup", "-d", dev, check=False).returncode == 0:
                break
            run("udevadm", "settle", check=False)


def add_partitions(dev: str) -> None:
    """Create /dev/loopNpK nodes for the table on ``dev`` (what the kernel does not do)."""
    run("partx", "-a", dev, check=False)
    run("partx", "-u", dev, check=False)
    if shutil.which("udevadm"):
        run("udevadm", "settle", check=False)


SAMPLE_UUID = "0b5a2e5c-0f0e-4d7c-9e0e-3f6f7f1d2a11"
SAMPLE_NETWORK = {
    "links": [{"id": "eth0", "type": "phy", "ethernet_mac_address": "52:54:00:aa:bb:cc", "mtu": None,
               "vif_id": "v1"}],
    "networks": [{"id": "n0", "link": "eth0", "network_id": "n1", "type": "ipv4", "ip_address": "192.0.2.10",
                  "netmask": "255.255.255.0", "routes": [], "services": []}],
    "services": [{"type": "dns", "address": "192.0.2.1"}],
}


def sample_content(**extra):
    """A drive with every kind of content: the tests' common subject. Tests compare what
    tools read back with the values of this object, not with literals of their own."""
    from configdrive.model.content import Content, InjectedFile
    content = Content(
        meta_data={"uuid": SAMPLE_UUID, "name": "node-1", "hostname": "node-1.example.org",
                   "public_keys": {"k1": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmwX0xJ2 k1@x"}},
        user_data=b"#cloud-config\nruncmd: [[echo, hi]]\n",
        network_data=json.loads(json.dumps(SAMPLE_NETWORK)),
        vendor_data={"cloud-init": "#cloud-config\nfinal_message: from vendor data\n"},
        vendor_data2={"static": {"answer": 42}, "cloud-init": "#cloud-config\nfinal_message: v2\n"},
        files=[InjectedFile("/etc/motd", b"hello\n"), InjectedFile("/root/bin.dat", bytes(range(256)))],
        **extra,
    )
    content.fill_defaults()
    return content


def make_gpt_disk(path: Path, disk_guid: str, seed: int, size: int = 24 << 20) -> Path:
    """A raw disk like an OS image: a GPT made by sgdisk (disk GUID ``disk_guid``), random
    data in two partitions (root at 1 MiB, data at 8 MiB), zeros elsewhere."""
    import random
    need_tool("sgdisk")
    with open(path, "wb") as fp:
        fp.truncate(size)
    run("sgdisk", "-U", disk_guid, "-n", "1:2048:+6M", "-c", "1:root", "-n", "2:0:+4M", "-c", "2:data", path)
    rnd = random.Random(seed)
    with open(path, "r+b") as fp:
        fp.seek(1 << 20)
        fp.write(rnd.randbytes(3 << 20))
        fp.seek(8 << 20)
        fp.write(rnd.randbytes(2 << 20))
    return path


def pytest_terminal_summary(terminalreporter):
    """The figures of tests/fuzz (cases per parser, faults survived) and what the
    end-to-end guests built and boots proved (tests/e2e/guestvm.py, test_boot.py), when they ran."""
    for figures in ("fuzz_tally", "guestvm", "test_boot"):
        module = sys.modules.get(figures)
        if module is not None:
            module.report(terminalreporter.write_line)
