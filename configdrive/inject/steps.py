"""What is injected, in nova's order: key, net, metadata, admin_password, files.

Each step works on a :class:`~.guestroot.GuestRoot`, so it is the same whether the
guest filesystem is mounted on the host or edited by debugfs. A failure in ``files``
fails the injection (the user asked for those exact files); the others only warn, as
nova did, because the guest may still be reachable some other way.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

from ..model.content import Content
from ..errors import ConfigDriveError, one_line
from . import eni
from .guestpath import GuestPath, parse
from .guestroot import GuestRoot
from .password import sha512_crypt

log = logging.getLogger("configdrive.inject")

ROOT_UID = ROOT_GID = 0
SSH_DIR: GuestPath = ("root", ".ssh")
AUTHORIZED_KEYS: GuestPath = (*SSH_DIR, "authorized_keys")
KEY_COMMENT = "# The following ssh key was injected by configdrive"
NEW_DIR_MODE = 0o744      # nova's mode for directories it had to create
NEW_FILE_MODE = 0o644


class InjectionError(ConfigDriveError):
    """A mandatory step failed; the image may hold the steps before it."""


def inject_key(root: GuestRoot, keys: list[str]) -> None:
    """Append each key (with a comment line) to root's authorized_keys; sshd's
    StrictModes wants root/.ssh 0700 and the file 0600, both owned by root."""
    root.makedirs(SSH_DIR[:1], NEW_DIR_MODE, ROOT_UID, ROOT_GID)
    if root.require(SSH_DIR, "dir") is None:
        root.mkdir(SSH_DIR, 0o700, ROOT_UID, ROOT_GID)
    root.set_attrs(SSH_DIR, 0o700, ROOT_UID, ROOT_GID)
    present = root.read(AUTHORIZED_KEYS).decode("utf-8", "replace") if root.require(AUTHORIZED_KEYS, "file") else ""
    have = {line.strip() for line in present.splitlines()}
    # Re-running inject must not pile up copies of the same key.
    new = [key.strip() for key in keys if key.strip() not in have]
    text = "".join(f"\n{KEY_COMMENT}\n{key}\n" for key in new)
    root.append(AUTHORIZED_KEYS, text.encode(), 0o600, ROOT_UID, ROOT_GID)
    _restorecon_for_keys(root)


def _restorecon_for_keys(root: GuestRoot) -> None:
    """On SELinux guests a file written from outside has no label; have the guest relabel
    root/.ssh at boot from rc.local (etc/rc.d/rc.local where only that exists)."""
    if not root.exists(("etc", "selinux")):
        return
    rc_local: GuestPath = ("etc", "rc.local")
    if not root.exists(rc_local) and root.exists(("etc", "rc.d")):
        rc_local = ("etc", "rc.d", "rc.local")
    existing = root.require(rc_local, "file")
    line = "restorecon -RF /root/.ssh 2>/dev/null || :"
    if existing and line in root.read(rc_local).decode("utf-8", "replace"):
        return
    text = ("" if existing else "#!/bin/sh\n") + \
        f"\n# Added by configdrive so that injected ssh keys get their SELinux context\n{line}\n"
    root.append(rc_local, text.encode(), 0o700, ROOT_UID, ROOT_GID)


def inject_net(root: GuestRoot, network_data: dict[str, Any]) -> None:
    root.makedirs(("etc", "network"), NEW_DIR_MODE, ROOT_UID, ROOT_GID)
    _write_keeping_attrs(root, ("etc", "network", "interfaces"), eni.render(network_data).encode())


def inject_metadata(root: GuestRoot, metadata: dict[str, Any]) -> None:
    """meta.js at the top of the filesystem: the instance's key/value metadata."""
    _write_keeping_attrs(root, ("meta.js",), json.dumps(metadata, sort_keys=True).encode())


def inject_admin_password(root: GuestRoot, password: str) -> None:
    """Set root's password field in etc/shadow; etc/passwd is only read, to make sure
    root is a user of this guest."""
    passwd = root.read(("etc", "passwd")).decode("utf-8", "surrogateescape")
    if not any(line.split(":", 1)[0] == "root" for line in passwd.splitlines()):
        raise ConfigDriveError("etc/passwd: no user root")
    shadow_path: GuestPath = ("etc", "shadow")
    lines = root.read(shadow_path).decode("utf-8", "surrogateescape").split("\n")
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root" and len(fields) >= 2:
            fields[1] = sha512_crypt(password)
            lines[i] = ":".join(fields)
            break
    else:
        raise ConfigDriveError("etc/shadow: no entry for root")
    _write_keeping_attrs(root, shadow_path, "\n".join(lines).encode("utf-8", "surrogateescape"))


def inject_files(root: GuestRoot, files: list[tuple[str, bytes]]) -> None:
    for path_text, data in files:
        path = parse(path_text)
        root.makedirs(path[:-1], NEW_DIR_MODE, ROOT_UID, ROOT_GID)
        _write_keeping_attrs(root, path, data)


def _write_keeping_attrs(root: GuestRoot, path: GuestPath, data: bytes) -> None:
    """Replace a file's bytes; an existing file keeps its mode and owner (etc/shadow stays
    0640 root:shadow), a new one is root's 0644."""
    st = root.require(path, "file")
    if st is None:
        root.write(path, data, NEW_FILE_MODE, ROOT_UID, ROOT_GID)
    else:
        root.write(path, data, st.mode, st.uid, st.gid)


def plan(content: Content) -> list[tuple[str, bool, Callable[[GuestRoot], None]]]:
    """(name, mandatory, step) for what ``content`` asks for, in nova's order."""
    md = content.meta_data
    steps: list[tuple[str, bool, Callable[[GuestRoot], None]]] = []
    keys = [key for _, key in content.ssh_keys()]
    if keys:
        steps.append(("key", False, lambda root: inject_key(root, keys)))
    if content.network_data and content.network_data.get("links"):
        steps.append(("net", False, lambda root: inject_net(root, content.network_data or {})))
    if md.get("meta"):
        steps.append(("metadata", False, lambda root: inject_metadata(root, md["meta"])))
    if md.get("admin_pass"):
        steps.append(("admin_password", False, lambda root: inject_admin_password(root, str(md["admin_pass"]))))
    if content.files:
        # Parse every path before writing any file: a '..' refuses the whole set.
        for f in content.files:
            parse(f.path)
        files = [(f.path, f.data) for f in content.files]
        steps.append(("files", True, lambda root: inject_files(root, files)))
    return steps


def run_steps(root: GuestRoot, content: Content, image: str) -> tuple[list[str], list[str]]:
    """Run the planned steps; returns (injected, warnings). Raises on a mandatory failure."""
    injected, warnings = [], []
    for name, mandatory, step in plan(content):
        log.info("Injecting %s into image %s", name, image)
        try:
            step(root)
        except (ConfigDriveError, OSError) as exc:
            if isinstance(exc, OSError):
                exc = ConfigDriveError(exc.strerror or str(exc))
            if mandatory:
                raise InjectionError(f"{image}: injecting {name} failed: {exc}") from exc
            message = one_line(f"{image}: injecting {name} failed, skipped: {exc}")
            log.warning("%s", message)
            warnings.append(message)
            continue
        injected.append(name)
    return injected, warnings
