"""Guest images for the injector's tests, made and read back with e2fsprogs, sfdisk and
qemu-img (tools we did not write): a tiny guest tree in ext4 (``mkfs.ext4 -d``), raw or
inside a GPT disk, and qcow2 copies."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from conftest import need_tool, out, run
from machine_state import is_mount_point, loops_backed_by

MiB = 1 << 20
ROOT_PART_OFFSET = 2 * MiB      # partition 2 of the GPT disk below


def guest_tree(base: Path, selinux: bool = False, links: dict[str, str] | None = None) -> Path:
    """etc/passwd, etc/shadow (0640 root:shadow), root/ (0700); etc/selinux on one variant;
    ``links`` plants symlinks (guest path -> target) as an attacker would."""
    tree = base / ("tree-selinux" if selinux else "tree")
    (tree / "etc").mkdir(parents=True)
    (tree / "root").mkdir(mode=0o700)
    (tree / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n"
                                     "bob:x:1000:1000:Bob:/home/bob:/bin/sh\n")
    shadow = tree / "etc/shadow"
    shadow.write_text("root:*:19000:0:99999:7:::\nbob:!:19000:0:99999:7:::\n")
    if os.geteuid() == 0:
        os.chown(shadow, 0, 42)     # group shadow, which injection must keep
    shadow.chmod(0o640)
    if selinux:
        (tree / "etc/selinux").mkdir()
        (tree / "etc/selinux/config").write_text("SELINUX=enforcing\n")
    for guest, target in (links or {}).items():
        link = tree / guest
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
    return tree


def ext4_image(path: Path, tree: Path, size_mib: int = 16) -> Path:
    need_tool("mkfs.ext4")
    with open(path, "wb") as f:
        f.truncate(size_mib * MiB)
    run("mkfs.ext4", "-q", "-F", "-d", tree, path)
    return path


def gpt_image(path: Path, fs_image: Path) -> Path:
    """A GPT disk: partition 1 a 1 MiB BIOS boot partition (no filesystem), partition 2
    the ext4 root; ``--partition auto`` must pass over the first."""
    need_tool("sfdisk")
    fs_size = fs_image.stat().st_size
    with open(path, "wb") as f:
        f.truncate(ROOT_PART_OFFSET + fs_size + MiB)
    run("sfdisk", "-q", path, input=(
        "label: gpt\n"
        "start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649\n"
        f"start={ROOT_PART_OFFSET // 512}, size={fs_size // 512}, type=L\n").encode())
    with open(fs_image, "rb") as src, open(path, "r+b") as dst:
        dst.seek(ROOT_PART_OFFSET)
        shutil.copyfileobj(src, dst)
    return path


def qcow2_copy(raw: Path) -> Path:
    need_tool("qemu-img")
    dst = raw.with_suffix(".qcow2")
    run("qemu-img", "convert", "-O", "qcow2", raw, dst)
    assert "qcow2" in out("qemu-img", "info", dst)
    return dst


def _dev(img: Path, offset: int) -> str:
    return f"{img}?offset={offset}" if offset else str(img)


def debugfs_cat(img: Path, guest_path: str, offset: int = 0) -> bytes:
    proc = run("debugfs", "-R", f'cat "{guest_path}"', _dev(img, offset))
    assert b"File not found" not in proc.stderr, proc.stderr
    return proc.stdout


def debugfs_stat(img: Path, guest_path: str, offset: int = 0) -> dict | None:
    """type, mode, uid, gid as debugfs's ``stat`` prints them; None when absent."""
    proc = run("debugfs", "-R", f'stat "{guest_path}"', _dev(img, offset))
    text = proc.stdout.decode()
    m = re.search(r"Type: (\w+)\s+Mode:\s+(\d+)", text)
    if not m:
        return None
    owner = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+)", text)
    return {"type": m.group(1), "mode": int(m.group(2), 8),
            "uid": int(owner.group(1)), "gid": int(owner.group(2))}


def e2fsck_clean(img: Path, offset: int = 0) -> None:
    """e2fsck -fn: a forced, read-only check; exit 0 means nothing to fix."""
    proc = run("e2fsck", "-fn", _dev(img, offset), check=False)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def attached_loops(img: Path) -> list[str]:
    """The loop devices still attached to this image file (by its inode)."""
    return loops_backed_by(img)


def record_loop_mounts(monkeypatch) -> list[str]:
    """The mount points the loop handler makes from now on in this test, each recorded as
    it is made: what the test then checks is gone is exactly these, not every mount whose
    path has a word in it (other runs on the machine mount things too)."""
    from configdrive.inject import loop
    made: list[str] = []
    real = loop.mount

    def recording(node, cleanup):
        mnt = real(node, cleanup)
        made.append(mnt)
        return mnt

    monkeypatch.setattr(loop, "mount", recording)
    return made


def mounts_released(made: list[str]) -> bool:
    """None of ``made`` is a mount point any more, and each directory is gone."""
    return not any(is_mount_point(m) or os.path.exists(m) for m in made)
