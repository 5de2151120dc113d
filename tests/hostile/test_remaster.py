"""`build --from` reads a drive someone else made (a user's ironic config drive, a disk's
config partition): whatever its files hold, a refusal is one line naming the file, and
neither the drive nor an existing output changes."""

from __future__ import annotations

import io
import json

import pytest

from configdrive.formats import iso
from configdrive.model.layout import build_tree

import bombs
from conftest import sample_content
from harness import assert_refused, refused, run_measured

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


# -- issue 20 -------------------------------------------------------------------------------

CLIMBING = {"uuid": "83679162-1378-4288-a2d4-70e13ec132aa", "hostname": "node-7",
            "files": [{"path": "/etc/x", "content_path": "/content/../../../etc/passwd"},
                      {"path": "/etc/y", "content_path": "/../../root/.ssh/id_rsa"}]}


@pytest.mark.parametrize("name", ["node-7", "other"], ids=["no-warning", "with-a-warning"])
def test_content_paths_that_climb_out_are_one_line(tmp_path, name):
    """Every version directory holds the entries, and the drive a lint warning besides:
    one line (was a line per directory and per entry, and the warning), exit 1."""
    image = drive_with(tmp_path, {"meta_data.json": json.dumps({**CLIMBING, "name": name}).encode()})
    out = tmp_path / "out.iso"
    out.write_bytes(b"previous image")
    outcome = run_measured("build", "--from", image, "--hostname", "node-7", "-o", out)
    line = assert_refused(outcome, names="/files/0/content_path: '/content/../../../etc/passwd' climbs out")
    assert outcome.stderr.count("\n") == 1, outcome.stderr
    assert "(also in 10 more files); " in line and "/files/1/content_path" in line
    assert out.read_bytes() == b"previous image"


@pytest.mark.parametrize("bomb", ["wide-empty-objects", "many-keys", "deep-objects"])
@pytest.mark.parametrize("name", ["meta_data.json", "network_data.json"])
def test_json_bombs_in_the_drive_are_refused_by_count(tmp_path, bomb, name):
    image = drive_with(tmp_path, {name: bombs.json_bombs(1 << 20)[bomb]})
    out = tmp_path / "out.iso"
    out.write_bytes(b"previous image")
    outcome = run_measured("build", "--from", image, "--hostname", "h", "-o", out)
    line = assert_refused(outcome, names=name)
    assert "more than 100000 JSON values" in line or "JSON nested deeper than 64 levels" in line, line
    assert outcome.cpu < 10 and out.read_bytes() == b"previous image"


def test_a_drive_of_many_large_documents_is_refused_by_its_total(tmp_path):
    """Each document within the limit, 22 distinct ones past the drive's total (500,000
    values): 16 s of CPU to validate before, refused in seconds now."""
    tree = build_tree(sample_content())
    for index, version in enumerate(sorted({p.split("/")[1] for p in tree if p.startswith("openstack/")} - {"content"})):
        tree[f"openstack/{version}/network_data.json"] = json.dumps(
            {"links": [{"id": f"l{i}", "type": "phy", "mtu": 1500 + index,
                        "ethernet_mac_address": f"fa:16:3e:00:{i >> 8:02x}:{i & 255:02x}"} for i in range(10_000)],
             "networks": [], "services": []}).encode()
    image = tmp_path / "given.iso"
    buffer = io.BytesIO()
    iso.write(tree, buffer, epoch=0)
    image.write_bytes(buffer.getvalue())
    out = tmp_path / "out.iso"
    for args in (("validate", image), ("build", "--from", image, "--hostname", "h", "-o", out)):
        outcome = run_measured(*args)
        assert outcome.returncode == 1 and outcome.stderr.count("\n") == 1 and outcome.cpu < 10, outcome.stderr
        assert "distinct documents hold more than 500000 JSON values" in outcome.stderr
    assert not out.exists()
