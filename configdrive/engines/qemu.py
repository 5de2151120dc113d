"""One guest run under QEMU: the command line (firmware, disks, drive, user-mode network,
KVM or TCG), and the wait for cloud-init's end on the serial console, then the power-off.

How the run ends, for any cloud image and without a word added to the user data under
test: QEMU runs with ``-no-reboot`` and a QMP socket, and the serial console is read as
it grows. Cloud-init prints ``Cloud-init v. X finished at ...`` on the console when its
final stage is done (its final_message module writes to /dev/console whatever the user
data says). From then the guest has ``SETTLE_SECONDS`` to power off by itself (an image
whose own config says ``power_state: poweroff``, as the suite's guests do); after that it
gets an ACPI power button press (QMP ``system_powerdown``: systemd shuts down cleanly, so
the root filesystem is unmounted); a guest that ignores the button (no logind, no acpid)
is stopped after ``POWERDOWN_SECONDS`` with QMP ``quit``, and its disk is read after
ext4's journal is replayed (configdrive.engines.verdict). ``wait="poweroff"`` waits only for the
guest to power off by itself: for images without cloud-init (glean) that do.

QEMU is the one system tool not run through partition.tools.run: it runs for minutes
beside the loop that reads its console, so it is a Popen of its own.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigDriveError
from .verdict import Verdict

log = logging.getLogger(__name__)

# Debian's packages for what a boot runs (named in the error when one is missing).
QEMU_PACKAGE = "qemu-system-x86"
QEMU_IMG_PACKAGE = "qemu-utils"
OVMF_PACKAGE = "ovmf"
# Debian's ovmf: the firmware (read-only) and the template of its variable store (each
# boot gets a writable copy, as a machine has its own NVRAM).
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# The NIC's MAC (network_data.json links can name it; cloud-init matches on it).
GUEST_MAC = "52:54:00:12:34:56"
# After cloud-init's final message: time for the guest to power off by its own config,
# then for an orderly shutdown after the power button.
SETTLE_SECONDS = 15
POWERDOWN_SECONDS = 60
# Cloud-init's own lines on the console (cloudinit/cmd/main.py, cc_final_message).
STARTED = re.compile(r"Cloud-init v\. (\S+) running '([\w:-]+)'")
FINISHED = re.compile(r"Cloud-init v\. (\S+) finished at [^.]*\.(?: Datasource (.*?)\.)?\s+Up [\d.]+ seconds")
_KVM_GET_API_VERSION = 0xAE00


def need_tool(name: str, package: str) -> str:
    """The tool's path, or a one-line refusal naming the Debian package that has it."""
    found = shutil.which(name)
    if found is None:
        raise ConfigDriveError(f"{name} is not installed (Debian package {package}); "
                               f"a boot needs it: apt-get install {package}")
    return found


def kvm_usable() -> bool:
    """/dev/kvm opens for reading and writing and answers the KVM API version (12)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, _KVM_GET_API_VERSION) == 12
    except OSError:
        return False
    finally:
        os.close(fd)


@dataclass
class Machine:
    """What one run boots: the root disk (qcow2 or raw), its logical sector size, the
    firmware (OVMF with ``uefi``; a kernel for QEMU's direct kernel boot; else SeaBIOS
    from the disk), the drive's QEMU arguments, and where its files go."""

    root_disk: Path
    root_format: str
    workdir: Path
    sector_size: int = 512
    uefi: bool = False
    kernel: Path | None = None
    initrd: Path | None = None
    append: str | None = None
    drive_args: list[str] = field(default_factory=list)
    memory_mib: int = 1024
    accel: str = "auto"

    def command(self, qemu: str, console: Path, qmp: Path) -> tuple[list[str], str]:
        """The QEMU command line, and the accelerator it uses."""
        accel = self.accel
        if accel == "auto":
            accel = "kvm" if kvm_usable() else "tcg"
        cpu = "host" if accel == "kvm" else "max"
        if self.uefi:
            if not OVMF_CODE.exists():
                raise ConfigDriveError(f"{OVMF_CODE} is missing (Debian package {OVMF_PACKAGE}); "
                                       f"--uefi needs it: apt-get install {OVMF_PACKAGE}")
            nvram = self.workdir / "OVMF_VARS.fd"
            shutil.copyfile(OVMF_VARS, nvram)
            firmware = ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                        "-drive", f"if=pflash,format=raw,file={nvram}"]
        elif self.kernel is not None:
            firmware = ["-kernel", str(self.kernel)]
            firmware += ["-initrd", str(self.initrd)] if self.initrd else []
            firmware += ["-append", self.append] if self.append else []
        else:
            firmware = []
        size = self.sector_size
        return [
            qemu, "-nodefaults", "-display", "none", "-no-reboot",
            "-accel", accel, "-cpu", cpu, "-smp", "2", "-m", str(self.memory_mib), *firmware,
            "-serial", f"file:{console}",
            "-qmp", f"unix:{qmp},server=on,wait=off",
            "-drive", f"file={self.root_disk},format={self.root_format},if=none,id=root",
            "-device", f"virtio-blk-pci,drive=root,logical_block_size={size},physical_block_size={size}",
            "-netdev", "user,id=net0", "-device", f"virtio-net-pci,netdev=net0,mac={GUEST_MAC}",
            *self.drive_args,
        ], accel


def tail(console: str, lines: int = 5) -> str:
    """The console's last non-empty lines, joined into one line for an error message."""
    last = [line.strip() for line in console.replace("\r", "").splitlines() if line.strip()][-lines:]
    return " | ".join(last) if last else "(the serial console is empty)"


def run_guest(machine: Machine, timeout: float, wait: str = "cloud-init") -> Verdict:
    """Boot ``machine``, wait (up to ``timeout`` seconds) for cloud-init to finish and the
    guest to power off (``wait="poweroff"``: only for the power-off). Returns the verdict's
    start: what the console said, the seconds, the accelerator, how the guest stopped
    ("poweroff" by itself, "powerdown" after the power button, "quit" stopped hard).
    Raises ConfigDriveError (one line, the console's last lines in it) when the guest does
    not get there.

    With ``accel="auto"``, a /dev/kvm that answers but fails QEMU (a nested or emulated
    KVM that refuses the CPU's registers: QEMU aborts before the guest prints a line) is
    logged and the boot runs again under TCG."""
    try:
        return _run_guest(machine, timeout, wait)
    except _KvmFailed as exc:
        log.warning("KVM failed (%s): booting under TCG instead", exc)
        machine.accel = "tcg"
        return _run_guest(machine, timeout, wait)


class _KvmFailed(Exception):
    pass


def _run_guest(machine: Machine, timeout: float, wait: str) -> Verdict:
    qemu = need_tool("qemu-system-x86_64", QEMU_PACKAGE)
    console = machine.workdir / "console.log"
    console.unlink(missing_ok=True)
    # A Unix socket's path is at most 107 bytes: the QMP socket lives in a short directory
    # of its own, not in the work directory (a pytest tmp_path is often longer).
    sockets = Path(tempfile.mkdtemp(prefix="configdrive-qmp-"))
    try:
        return _run_qemu(machine, timeout, wait, qemu, console, sockets / "qmp.sock")
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


def _run_qemu(machine: Machine, timeout: float, wait: str, qemu: str, console: Path, qmp: Path) -> Verdict:
    cmd, accel = machine.command(qemu, console, qmp)
    started = time.monotonic()
    errors = machine.workdir / "qemu.stderr"
    with open(errors, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    finished_at = None
    growing = _Growing(console)
    stopped = "poweroff"
    try:
        while True:
            code = proc.poll()
            text, new = growing.poll()
            if code is not None:
                break
            now = time.monotonic()
            if finished_at is None and wait == "cloud-init" and FINISHED.search(new):
                finished_at = now
            if finished_at is not None:
                if stopped == "poweroff" and now - finished_at > SETTLE_SECONDS:
                    _qmp(qmp, "system_powerdown")
                    stopped = "powerdown"
                elif stopped == "powerdown" and now - finished_at > SETTLE_SECONDS + POWERDOWN_SECONDS:
                    _qmp(qmp, "quit")
                    stopped = "quit"
            if now - started > timeout:
                raise ConfigDriveError(_not_done(text, timeout, wait, console))
            time.sleep(0.5)
    finally:
        growing.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    seconds = time.monotonic() - started
    text = _read(console)
    if code != 0 and stopped != "quit":
        why = errors.read_text(errors="replace").strip().splitlines()
        if machine.accel == "auto" and accel == "kvm" and not text and "kvm" in " ".join(why).lower():
            raise _KvmFailed(why[-1].strip() if why else f"exit {code}")
        raise ConfigDriveError(f"qemu-system-x86_64 exited {code}"
                               + (f" ({why[-1].strip()})" if why else "")
                               + f"; console's last lines ({console}): {tail(text)}")
    versions = STARTED.findall(text)
    final = FINISHED.search(text)
    if wait == "cloud-init" and not versions:
        raise ConfigDriveError(f"cloud-init never started: the guest powered off without a "
                               f"'Cloud-init v. ... running' line on its serial console (ttyS0), "
                               f"see {console}; its last lines: {tail(text)}")
    if wait == "cloud-init" and final is None:
        raise ConfigDriveError(f"the guest powered off before cloud-init finished "
                               f"(no 'Cloud-init v. ... finished' line), see {console}; "
                               f"its last lines: {tail(text)}")
    return Verdict(console_log=console, seconds=seconds, accel=accel, stopped=stopped, how="",
                   cloud_init_version=versions[0][0] if versions else None,
                   datasource=final.group(2) if final else None)


def _not_done(text: str, timeout: float, wait: str, console: Path) -> str:
    if wait == "poweroff":
        what = "the guest did not power off"
    elif not STARTED.search(text):
        what = "no boot: cloud-init never started"
    elif not FINISHED.search(text):
        what = "cloud-init started but did not finish"
    else:
        what = "cloud-init finished but the guest did not stop"
    return f"{what} within {timeout:g} s (console {console}); its last lines: {tail(text)}"


class _Growing:
    """The console as QEMU appends to it, read from where the last poll stopped: a guest
    that floods its console costs a read of each byte once (read whole every half second,
    a 100 MB console cost gigabytes). ``poll`` returns the last TAIL characters (for the
    error messages) and what is new with the tail before it (for a line cut between polls)."""

    TAIL = 64 << 10

    def __init__(self, path: Path):
        self._path, self._fp, self._tail = path, None, ""

    def poll(self) -> tuple[str, str]:
        if self._fp is None:
            try:
                self._fp = open(self._path, "rb")
            except FileNotFoundError:
                return "", ""
        new = self._tail + self._fp.read().decode(errors="replace").replace("\r", "")
        self._tail = new[-self.TAIL:]
        return self._tail, new

    def close(self) -> None:
        if self._fp is not None:
            self._fp.close()


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode(errors="replace").replace("\r", "")
    except FileNotFoundError:
        return ""


def _qmp(path: Path, command: str) -> None:
    """One QMP command (after the capabilities handshake); a guest already gone is fine."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(path))
            f = s.makefile("rwb")
            f.readline()   # the greeting
            for execute in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": execute}).encode() + b"\n")
                f.flush()
                while True:   # skip events up to this command's answer
                    answer = json.loads(f.readline() or b"{}")
                    if "return" in answer or "error" in answer or not answer:
                        break
    except (OSError, ValueError):
        pass
