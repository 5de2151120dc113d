"""One normalized model of what a config drive carries, and the ways to fill it.

Every producer (files on the command line, an ironic-style request, keyword arguments
from Python) ends in the same :class:`Content`; the layout, the validator and the injector
read only that. Nothing here touches a filesystem image.
"""

from __future__ import annotations

import copy
import json
import sys
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import ConfigDriveError

# The keys the ironic API accepts in its configdrive object (ironic api/controllers/v1/node.py).
IRONIC_KEYS = ("meta_data", "network_data", "user_data", "vendor_data")

# Namespace for the uuid we derive when none is given: a drive without meta_data.uuid is
# rejected by cloud-init, and a random one would break reproducible builds.
_DERIVED_UUID_NAMESPACE = uuidlib.UUID("6c1b4c36-4e8f-4c3a-9d0e-3f0a8c2d6b11")


@dataclass
class InjectedFile:
    """A file the guest should get at ``path`` (nova's "personality" files)."""

    path: str
    data: bytes


@dataclass
class Content:
    """What goes on a drive, independent of format and version layout.

    ``meta_data`` is the OpenStack meta_data.json document as the newest version would
    carry it; the layout trims version-gated keys for older directories. ``user_data`` is
    opaque bytes (text, gzip, MIME multipart, binary). ``None`` means "not given"; the
    layout then writes what nova writes in that case.
    """

    meta_data: dict[str, Any] = field(default_factory=dict)
    user_data: bytes | None = None
    network_data: dict[str, Any] | None = None
    vendor_data: dict[str, Any] | None = None
    vendor_data2: dict[str, Any] | None = None
    files: list[InjectedFile] = field(default_factory=list)
    random_seed: bool = False
    ec2: dict[str, Any] | None = None    # keys of ec2/<version>/meta-data.json to write as given

    # -- derived facts the layout, the validator and the injector share --------------

    @property
    def uuid(self) -> str:
        return str(self.meta_data.get("uuid", ""))

    @property
    def hostname(self) -> str:
        return str(self.meta_data.get("hostname") or self.meta_data.get("name") or "")

    def ssh_keys(self) -> list[tuple[str, str]]:
        """(name, key) pairs from public_keys and ssh entries of keys, without repeats."""
        seen: dict[str, str] = {}
        for name, key in (self.meta_data.get("public_keys") or {}).items():
            seen.setdefault(str(key).strip(), str(name))
        for entry in self.meta_data.get("keys") or []:
            if isinstance(entry, Mapping) and entry.get("type", "ssh") == "ssh" and entry.get("data"):
                seen.setdefault(str(entry["data"]).strip(), str(entry.get("name", "")))
        return [(name, key) for key, name in seen.items()]

    # -- builders -------------------------------------------------------------------

    @classmethod
    def from_ironic(cls, obj: Any, source: str = "ironic configdrive") -> "Content":
        """The ironic API's configdrive object: meta_data, network_data, user_data,
        vendor_data and nothing else. A dict or list user_data is JSON-encoded (as
        ironic does); ``vendor_data`` becomes vendor_data2.json, as openstacksdk's
        builder (which ironic calls) writes it."""
        if not isinstance(obj, Mapping):
            raise ConfigDriveError(f"{source}: must be a JSON object with keys {', '.join(IRONIC_KEYS)}")
        unknown = sorted(set(obj) - set(IRONIC_KEYS))
        if unknown:
            from .checks import pointer   # checks imports drive, which imports this module
            raise ConfigDriveError(
                f"{source}: {pointer(unknown[0])}: unknown key (allowed: {', '.join(IRONIC_KEYS)})")
        content = cls()
        for key in ("meta_data", "network_data", "vendor_data"):
            value = obj.get(key)
            if value is not None and not isinstance(value, Mapping):
                raise ConfigDriveError(f"{source}: /{key}: must be a JSON object, not {_json_type(value)}")
        content.meta_data = copy.deepcopy(dict(obj.get("meta_data") or {}))
        if obj.get("network_data") is not None:
            content.network_data = copy.deepcopy(dict(obj["network_data"]))
        if obj.get("vendor_data") is not None:
            content.vendor_data2 = copy.deepcopy(dict(obj["vendor_data"]))
        user_data = obj.get("user_data")
        if isinstance(user_data, (dict, list)):
            content.user_data = json.dumps(user_data).encode()
        elif isinstance(user_data, str):
            content.user_data = user_data.encode()
        elif user_data is not None:
            raise ConfigDriveError(
                f"{source}: /user_data: must be an object, array, string or null, not {_json_type(user_data)}")
        return content

    def apply_shortcuts(
        self,
        *,
        uuid: str | None = None,
        name: str | None = None,
        hostname: str | None = None,
        ssh_keys: Iterable[tuple[str, str]] = (),
        admin_pass: str | None = None,
    ) -> None:
        """Set the common keys directly; given values win over those from files."""
        md = self.meta_data
        if uuid is not None:
            md["uuid"] = uuid
        if name is not None:
            md["name"] = name
        if hostname is not None:
            md["hostname"] = hostname
            if name is None:
                # glean names the host from `name`, cloud-init from `hostname`: a new
                # hostname alone must not leave an old name behind.
                md["name"] = hostname.split(".")[0]
        if admin_pass is not None:
            md["admin_pass"] = admin_pass
        for key_name, key in ssh_keys:
            add_ssh_key(md, key_name, key)

    def fill_defaults(self) -> None:
        """What nova always writes: name and hostname from each other, launch_index 0,
        and a uuid (derived from the content, so builds stay reproducible)."""
        md = self.meta_data
        if md.get("hostname") and not md.get("name"):
            md["name"] = str(md["hostname"]).split(".")[0]
        if md.get("name") and not md.get("hostname"):
            md["hostname"] = md["name"]
        md.setdefault("launch_index", 0)
        if not md.get("uuid"):
            md["uuid"] = str(uuidlib.uuid5(_DERIVED_UUID_NAMESPACE, self._fingerprint()))

    def _fingerprint(self) -> str:
        doc = {
            "meta_data": {k: v for k, v in self.meta_data.items() if k != "uuid"},
            "network_data": self.network_data,
            "vendor_data": self.vendor_data,
            "vendor_data2": self.vendor_data2,
            "ec2": self.ec2,
            "user_data": (self.user_data or b"").hex(),
            "files": [(f.path, f.data.hex()) for f in self.files],
        }
        return json.dumps(doc, sort_keys=True, default=str)


def content_from_files(
    *,
    ironic: str | None = None,
    meta_data: str | None = None,
    user_data: str | None = None,
    network_data: str | None = None,
    vendor_data: str | None = None,
    vendor_data2: str | None = None,
    ec2: str | None = None,
    files: Iterable[str] = (),
    ssh_keys: Iterable[str] = (),
    uuid: str | None = None,
    name: str | None = None,
    hostname: str | None = None,
    admin_pass: str | None = None,
    random_seed: bool = False,
) -> Content:
    """The content that the command-line options describe (paths, ``-`` for stdin).

    An ironic object is the base; separate files replace its parts; shortcuts win last.
    """
    content = Content()
    if ironic is not None:
        content = Content.from_ironic(parse_json(read_bytes(ironic, "ironic configdrive"), ironic), ironic)
    if meta_data is not None:
        content.meta_data = load_json_object(meta_data, "meta_data")
        from .remaster import carry_over_files   # remaster imports this module
        content.files.extend(carry_over_files(content.meta_data, meta_data))
    if user_data is not None:
        content.user_data = read_bytes(user_data, "user data")
    if network_data is not None:
        content.network_data = load_json_object(network_data, "network_data")
    if vendor_data is not None:
        content.vendor_data = load_json_object(vendor_data, "vendor_data")
    if vendor_data2 is not None:
        content.vendor_data2 = load_json_object(vendor_data2, "vendor_data2")
    if ec2 is not None:
        content.ec2 = load_json_object(ec2, "ec2 meta-data")
    content.files.extend(parse_file_option(spec) for spec in files)
    keys = [pair for path in ssh_keys for pair in read_ssh_keys(path)]
    content.apply_shortcuts(uuid=uuid, name=name, hostname=hostname, ssh_keys=keys, admin_pass=admin_pass)
    content.random_seed = random_seed
    content.fill_defaults()
    return content


def add_ssh_key(meta_data: dict[str, Any], key_name: str, key: str) -> None:
    """Add a key to public_keys and keys, as nova does for a keypair; names stay unique."""
    key = key.strip()
    public_keys = meta_data.setdefault("public_keys", {})
    if key in public_keys.values():
        return
    unique = key_name or "key"
    n = 1
    while unique in public_keys:
        n += 1
        unique = f"{key_name}-{n}"
    public_keys[unique] = key
    meta_data.setdefault("keys", []).append({"name": unique, "type": "ssh", "data": key})


def read_ssh_keys(path: str) -> list[tuple[str, str]]:
    """Keys from an authorized_keys-style file: one per line, comments and blanks skipped.
    A key's name is its comment field, else the file's stem."""
    text = read_bytes(path, "ssh key").decode("utf-8", "replace")
    keys = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2 or not (parts[0].startswith(("ssh-", "ecdsa-", "sk-"))):
            raise ConfigDriveError(f"{path}: line {lineno}: not an OpenSSH public key")
        name = parts[2] if len(parts) > 2 else Path(path).stem
        keys.append((name, line))
    if not keys:
        raise ConfigDriveError(f"{path}: no SSH public key in the file")
    return keys


def read_bytes(path: str, what: str = "input") -> bytes:
    """A file's bytes; ``-`` is standard input."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigDriveError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None


# No config-drive document nests deeper than a few levels; everything downstream (copies,
# schema validation, encoding) recurses per level, so depth is bounded at the door.
MAX_JSON_DEPTH = 64


def parse_json(data: bytes, source: str) -> Any:
    """Parse JSON, naming the file, line and column of a syntax error."""
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ConfigDriveError(f"{source}: byte {exc.start}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ConfigDriveError(
            f"{source}: line {exc.lineno} column {exc.colno}: invalid JSON ({exc.msg})") from None
    except RecursionError:
        doc = too_deep = True
    else:
        too_deep = _nested_deeper_than(doc, MAX_JSON_DEPTH)
    if too_deep:
        raise ConfigDriveError(f"{source}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return doc


def _nested_deeper_than(doc: Any, limit: int) -> bool:
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return False


def load_json_object(path: str, what: str) -> dict[str, Any]:
    """A JSON file that must hold an object (every config-drive JSON document does)."""
    obj = parse_json(read_bytes(path, what), path)
    if not isinstance(obj, dict):
        raise ConfigDriveError(f"{path}: {what} must be a JSON object, not {_json_type(obj)}")
    return obj


def parse_file_option(spec: str) -> InjectedFile:
    """``GUEST_PATH=LOCAL_FILE`` from ``--file``."""
    guest, sep, local = spec.partition("=")
    if not sep or not guest or not local:
        raise ConfigDriveError(f"--file {spec}: expected GUEST_PATH=LOCAL_FILE")
    return InjectedFile(guest, read_bytes(local, f"file for {guest}"))


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)
