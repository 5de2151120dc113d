"""`build --from` reads a drive someone else made (a user's ironic config drive, a disk's
config partition): whatever its files hold, a refusal is one line naming the file, and
neither the drive nor an existing output changes."""

from __future__ import annotations

import io
import json

import pytest

from configdrive import iso
from configdrive.layout import build_tree

from conftest import sample_content
from harness import refused

DEEP = b"[" * 100_000 + b"]" * 100_000

# (file in every version directory, its bytes, the options that make us parse it)
CASES = [
    ("meta_data.json", b"not json", ["--hostname", "h"]),
    ("meta_data.json", b"[1, 2]", ["--hostname", "h"]),
    ("meta_data.json", b"\xff\xfe{}", ["--ssh-key", "KEY"]),
    ("meta_data.json", DEEP, ["--uuid", "0b5a2e5c-0f0e-4d7c-9e0e-3f6f7f1d2a11"]),
    ("meta_data.json", b'"a string"', ["--random-seed"]),
    ("meta_data.json", b"{" * 3, ["--file", "/etc/x=KEY"]),
]
EC2_CASES = [b"nope", b"[]", b"null", DEEP]


def drive_with(tmp_path, replace: dict[str, bytes]) -> str:
    tree = build_tree(sample_content())
    for path in list(tree):
        name = path.rsplit("/", 1)[1]
        if name in replace and path.startswith(("openstack/", "ec2/")):
            tree[path] = replace[name]
    image = tmp_path / "given.iso"
    buffer = io.BytesIO()
    iso.write(tree, buffer, epoch=0)
    image.write_bytes(buffer.getvalue())
    return image


def key_file(tmp_path):
    key = tmp_path / "k.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmwX0xJ2 k@x\n")
    return key


@pytest.mark.parametrize("name, data, options", CASES, ids=[f"{i}" for i in range(len(CASES))])
def test_a_broken_document_in_the_drive_is_refused_naming_it(tmp_path, name, data, options):
    image = drive_with(tmp_path, {name: data})
    out = tmp_path / "out.iso"
    out.write_bytes(b"previous image")
    options = [str(key_file(tmp_path)) if o == "KEY" else o.replace("KEY", str(key_file(tmp_path)))
               for o in options]
    refused("build", "--from", image, *options, "-o", out, watch=[image, out], names=name)


@pytest.mark.parametrize("data", EC2_CASES, ids=["text", "array", "null", "deep"])
def test_a_broken_ec2_document_is_refused_naming_it(tmp_path, data):
    image = drive_with(tmp_path, {"meta-data.json": data})
    section = tmp_path / "ec2.json"
    section.write_text(json.dumps({"instance-type": "m1.small"}))
    out = tmp_path / "out.iso"
    out.write_bytes(b"previous image")
    refused("build", "--from", image, "--ec2-meta-data", section, "-o", out, watch=[image, out],
            names="meta-data.json")


@pytest.mark.parametrize("cut", [0, 1, 17, 40_000, -1])
def test_a_truncated_or_empty_drive_is_refused(tmp_path, cut):
    whole = drive_with(tmp_path, {}).read_bytes()
    image = tmp_path / "cut.iso"
    image.write_bytes(whole[:cut] if cut >= 0 else whole[:-2048])
    out = tmp_path / "out.iso"
    out.write_bytes(b"previous image")
    refused("build", "--from", image, "--hostname", "h", "-o", out, watch=[image, out], names=str(image))


@pytest.mark.parametrize("tree", [{"README": b"x"}, {"openstack/content/0000": b"x"}, {"ec2/latest/meta-data.json": b"{}"}],
                         ids=["no-openstack", "content-only", "ec2-only"])
def test_a_tree_without_version_directories_is_refused(tmp_path, tree):
    source = tmp_path / "given"
    for rel, data in tree.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(data)
    out = tmp_path / "out.iso"
    refused("build", "--from", source, "-o", out, names="not a config drive")
    assert not out.exists()
