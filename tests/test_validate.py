"""Validation: schemas, the checks in code, whole drives, and the command.

The corpus under tests/corpus/validate/ holds documents in the shapes nova, ironic and
openstacksdk write (valid/) and one flaw per file (invalid/, with expected.json naming the
pointer and a piece of the message). cloud-init's own reader confirms that what we refuse
on a drive is what cloud-init refuses.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from configdrive.drives import pathcheck
from configdrive.documents import schema as schemas, validate
from configdrive.model.content import Content, InjectedFile
from configdrive.files.drivefiles import MAX_DRIVE_BYTES
from configdrive.model.layout import build_tree
from configdrive.drives.buildcheck import check_content, validate_content
from configdrive.drives.drivecheck import CLOUD_INIT_VERSIONS, cloud_init_version
from configdrive.drives.pathcheck import validate_paths
from configdrive.documents.problems import Problem
from configdrive.errors import ConfigDriveError

from conftest import SYSTEM_PYTHON, cloud_init_read, configdrive, run

CORPUS = Path(__file__).parent / "corpus" / "validate"
VALID = sorted(p for p in (CORPUS / "valid").iterdir())
EXPECTED = json.loads((CORPUS / "invalid" / "expected.json").read_text())
UUID = "d8e02d56-2648-49a3-bf97-6be8f1204f38"


def without_consumer_lints(problems):
    """The problems these tests are about: minimal trees also draw consumer lints (no ec2
    tree for Afterburn, name without hostname), which tests/test_consumers.py covers."""
    from configdrive.documents.consumers import AFTERBURN, CLOUD_INIT, GLEAN, IPA
    consumers = tuple(f"{c}: " for c in (AFTERBURN, CLOUD_INIT, GLEAN, IPA))
    return [p for p in problems if not (p.severity == "warning" and p.message.startswith(consumers))]


def errors(problems):
    return [p for p in problems if p.severity == "error"]


# -- the schemas themselves -----------------------------------------------------------

SCHEMA_NAMES = sorted(p.name for p in files("configdrive.schemas").iterdir() if p.name.endswith(".json"))


def test_every_schema_is_shipped_and_used():
    assert set(SCHEMA_NAMES) == set(schemas.SCHEMA_FILES.values())


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_valid_draft_2020_12(name):
    schema = schemas.load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_schemas_in_the_checkout_are_the_installed_ones():
    root = Path(__file__).resolve().parent.parent / "schemas"
    for name in SCHEMA_NAMES:
        assert json.loads((root / name).read_text()) == schemas.load_schema(name)


# -- the corpus -----------------------------------------------------------------------

@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_corpus_passes(path):
    assert errors(validate_paths([str(path)])) == []


def test_invalid_corpus_is_large_enough():
    assert len(EXPECTED) >= 40
    on_disk = {p.name for p in (CORPUS / "invalid").iterdir()} - {"expected.json"}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_corpus_fails_exactly_where_expected(name):
    path = CORPUS / "invalid" / name
    found = errors(validate_paths([str(path)]))
    want = EXPECTED[name]
    # one flaw per file: exactly one error, at the right place, saying the right thing
    assert [(p.source, p.pointer) for p in found] == [(str(path), want["pointer"])], found
    assert want["message"] in found[0].message


def test_quirks_real_producers_write_are_accepted():
    """The spec's quirks, stated directly (not only through corpus files)."""
    link = {"id": "eth0", "type": "bridge", "ethernet_mac_address": "fa:16:3e:00:00:01", "mtu": None}
    nets = [{"id": f"n{i}", "link": "eth0", "type": t}
            for i, t in enumerate(["ipv6_dhcpv6-stateful", "ipv6_dhcpv6_stateful", "ipv4_dhcp"])]
    doc = {"links": [link], "networks": nets, "services": []}
    assert errors(validate.validate_document("network_data", doc, "n")) == []
    assert validate.validate_document("network_data", {}, "n") == []
    meta = {"uuid": UUID, "brand_new_nova_key": {"x": 1}}
    assert validate.validate_document("meta_data", meta, "m") == []


def test_underscored_ipv6_spelling_warns_that_cloud_init_ignores_it():
    doc = {"links": [{"id": "e", "type": "phy", "ethernet_mac_address": "fa:16:3e:00:00:01"}],
           "networks": [{"id": "n", "link": "e", "type": "ipv6_dhcpv6_stateless"}], "services": []}
    (warning,) = validate.validate_document("network_data", doc, "n")
    assert (warning.severity, warning.pointer) == ("warning", "/networks/0/type")
    assert "ipv6_dhcpv6-stateless" in warning.message


def test_unknown_link_type_is_a_warning_not_an_error():
    doc = {"links": [{"id": "e", "type": "macvtap", "ethernet_mac_address": "fa:16:3e:00:00:01"}],
           "networks": [], "services": []}
    (warning,) = validate.validate_document("network_data", doc, "n")
    assert (warning.severity, warning.pointer) == ("warning", "/links/0/type")


def test_every_problem_is_reported_not_only_the_first(tmp_path):
    bad = tmp_path / "meta_data.json"
    bad.write_text(json.dumps({"uuid": "nope", "launch_index": -3, "hostname": 1,
                               "files": [{"path": "../x", "content_path": "/content/0000"}]}))
    found = validate_paths([str(bad)])
    assert [p.pointer for p in found] == ["/files/0/path", "/files/0/path", "/hostname", "/launch_index", "/uuid"]
    assert str(found[-1]).startswith(f"{bad}: /uuid: ")


def test_list_indexes_sort_as_numbers():
    links = [{"id": f"l{i}", "type": "phy", "ethernet_mac_address": "bad" if i in (2, 10) else "fa:16:3e:00:00:01"}
             for i in range(11)]
    found = validate.validate_document("network_data", {"links": links, "networks": [], "services": []}, "n")
    assert [p.pointer for p in found] == ["/links/2/ethernet_mac_address", "/links/10/ethernet_mac_address"]


def test_problem_line_format():
    assert str(Problem("a.json", "/links/0/id", "wrong")) == "a.json: /links/0/id: wrong"
    assert str(Problem("a.json", "", "wrong")) == "a.json: /: wrong"


def test_kind_from_name():
    assert pathcheck.kind_from_name("x/openstack/latest/meta_data.json") == "meta_data"
    assert pathcheck.kind_from_name("node1.vendor_data2.json") == "vendor_data2"
    assert pathcheck.kind_from_name("ec2/latest/meta-data.json") == "ec2_meta_data"
    assert pathcheck.kind_from_name("my-node.ironic.json") == "ironic"
    assert pathcheck.kind_from_name("user-data") == "user_data"
    assert pathcheck.kind_from_name("notes.json") is None


def test_kind_option_overrides_the_name(tmp_path):
    doc = tmp_path / "anything.json"
    doc.write_text('{"links": [{"id": "a"}]}')
    assert "cannot tell" in validate_paths([str(doc)])[0].message
    found = validate_paths([str(doc)], kind="network_data")
    assert [p.pointer for p in errors(found)] == ["/links/0/type"]


def test_unreadable_file_is_a_problem_not_a_crash(tmp_path):
    (problem,) = validate_paths([str(tmp_path / "missing" / "meta_data.json")])
    assert "cannot read" in problem.message


# -- content about to be built --------------------------------------------------------

def test_content_problems_are_named_like_the_files():
    content = Content(meta_data={"uuid": UUID, "launch_index": "0"},
                      network_data={"links": [{"id": "e", "type": "phy"}], "networks": [], "services": []},
                      vendor_data2={"cloud-init": {"a": 1}},
                      files=[InjectedFile("etc/x", b"x")])
    assert [str(p) for p in validate_content(content)] == [
        "meta_data: /launch_index: must be an integer, not a string",
        "network_data: /links/0/ethernet_mac_address: required key is missing",
        "vendor_data2: /cloud-init: must be a string, an array or null, not an object",
        "files: /0/path: 'etc/x' is not an absolute path",
    ]
    with pytest.raises(ConfigDriveError, match="meta_data: /launch_index"):
        check_content(content)


def test_meta_data_files_entries_need_injected_content():
    content = Content(meta_data={"uuid": UUID, "files": [{"path": "/etc/x", "content_path": "/content/0000"}]})
    (problem,) = validate_content(content)
    assert (problem.source, problem.pointer) == ("meta_data", "/files/0/content_path")


def test_user_data_over_novas_limit_warns():
    content = Content(meta_data={"uuid": UUID}, user_data=b"x" * 65536)
    (warning,) = validate_content(content)
    assert (warning.source, warning.severity) == ("user_data", "warning")
    assert "nova" in warning.message
    # just under nova's limit of 65535 base64 characters: nothing to say
    assert validate_content(Content(meta_data={"uuid": UUID}, user_data=b"x" * 49149)) == []


def test_user_data_over_the_drive_capacity_is_refused():
    content = Content(meta_data={"uuid": UUID}, user_data=b"x" * (MAX_DRIVE_BYTES + 1))
    assert [p.source for p in errors(validate_content(content, versions="latest", ec2=False))] == ["user_data"]


def test_capacity_counts_every_copy_of_user_data():
    # 6 MiB is fine once, but not in 10 version directories + latest + 2 ec2 copies
    content = Content(meta_data={"uuid": UUID}, user_data=b"x" * (6 << 20))
    (error,) = errors(validate_content(content))
    assert "13 times" in error.message
    assert errors(validate_content(content, versions="2012-08-10,latest", ec2=False)) == []


# -- whole drives ---------------------------------------------------------------------

def nova_tree(**kw) -> dict[str, bytes]:
    content = Content(meta_data={"uuid": UUID, "name": "vm", "hostname": "vm"}, user_data=b"#!/bin/sh\n",
                      network_data=json.loads((CORPUS / "valid" / "ironic-bond-vlan.network_data.json").read_text()),
                      files=[InjectedFile("/etc/motd", b"hello\n")], **kw)
    return build_tree(content)


def write_tree(root: Path, tree: dict[str, bytes]) -> Path:
    for rel, data in tree.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_cloud_init_version_choice():
    assert CLOUD_INIT_VERSIONS[-1] == "2018-08-27"
    assert cloud_init_version(["2012-08-10", "latest"]) == "2012-08-10"
    assert cloud_init_version(["2012-08-10", "2018-08-27", "2020-10-14", "latest"]) == "2018-08-27"
    assert cloud_init_version(["2025-04-04", "latest"]) == "latest"


def test_cloud_init_picks_the_directory_we_say_it_picks(tmp_path):
    """Our constant against cloud-init's own choice: a drive whose dated directories carry
    a different hostname than latest/."""
    tree = {}
    for version in ("2012-08-10", "2016-06-30", "2020-10-14", "latest"):
        tree[f"openstack/{version}/meta_data.json"] = json.dumps({"uuid": UUID, "hostname": version}).encode()
    result = cloud_init_read(write_tree(tmp_path, tree))
    assert result["metadata"]["hostname"] == cloud_init_version(["2012-08-10", "2016-06-30", "2020-10-14", "latest"])


def test_a_nova_drive_directory_is_valid(tmp_path):
    root = write_tree(tmp_path, nova_tree())
    assert validate_paths([str(root)]) == []
    assert cloud_init_read(root)["metadata"]["instance-id"] == UUID


def test_drive_without_uuid_is_refused_and_cloud_init_agrees(tmp_path):
    tree = {"openstack/latest/meta_data.json": b'{"name": "vm"}'}
    root = write_tree(tmp_path, tree)
    (problem,) = without_consumer_lints(validate_paths([str(root)]))
    assert str(problem) == f"{root}/openstack/latest/meta_data.json: /uuid: required key is missing"
    _cloud_init_refuses(root, "No 'uuid' entry in metadata")


def test_drive_with_invalid_json_is_refused_and_cloud_init_agrees(tmp_path):
    tree = nova_tree()
    tree["openstack/latest/vendor_data2.json"] = b'{"cloud-init": "x",}'
    root = write_tree(tmp_path, tree)
    (problem,) = validate_paths([str(root)])
    assert problem.source == f"{root}/openstack/latest/vendor_data2.json"
    assert "invalid JSON" in problem.message
    # cloud-init reads 2018-08-27/ here, so break that copy too to see it refuse
    (root / "openstack/2018-08-27/vendor_data2.json").write_bytes(b'{"cloud-init": "x",}')
    _cloud_init_refuses(root, "Failed to process path")


def test_missing_content_file_is_refused_and_cloud_init_agrees(tmp_path):
    tree = nova_tree()
    del tree["openstack/content/0000"]
    root = write_tree(tmp_path, tree)
    found = validate_paths([str(root)])
    # every version directory's meta_data.json points at it
    assert {p.pointer for p in found} == {"/files/0/content_path"}
    assert len(found) == 11
    _cloud_init_refuses(root, "Failed to read provided file")


def test_byte_order_mark_is_refused_and_cloud_init_agrees(tmp_path):
    tree = {"openstack/latest/meta_data.json": b"\xef\xbb\xbf" + json.dumps({"uuid": UUID}).encode()}
    root = write_tree(tmp_path, tree)
    (problem,) = without_consumer_lints(validate_paths([str(root)]))
    assert "byte order mark" in problem.message
    _cloud_init_refuses(root, "Failed to process path")


def test_network_data_only_in_latest_is_lost_and_cloud_init_agrees(tmp_path):
    """openstacksdk's tree (2012-08-10 and latest) with network data written only into
    latest/: cloud-init reads 2012-08-10/ and never sees it."""
    net = (CORPUS / "valid" / "nova-bridge-dhcp.network_data.json").read_bytes()
    meta = json.dumps({"uuid": UUID}).encode()
    tree = {"openstack/2012-08-10/meta_data.json": meta, "openstack/latest/meta_data.json": meta,
            "openstack/latest/network_data.json": net}
    root = write_tree(tmp_path, tree)
    (problem,) = without_consumer_lints(validate_paths([str(root)]))
    assert problem.source == f"{root}/openstack/latest/network_data.json"
    assert "cloud-init reads openstack/2012-08-10/" in problem.message
    assert "networkdata" not in cloud_init_read(root)
    # written into both, as openstacksdk does: fine, and cloud-init sees it
    (root / "openstack/2012-08-10/network_data.json").write_bytes(net)
    assert without_consumer_lints(validate_paths([str(root)])) == []
    assert cloud_init_read(root)["networkdata"]["links"][0]["id"] == "tapcd9f6d46-4a"


def test_dated_copy_that_differs_from_latest_warns(tmp_path):
    tree = nova_tree()
    tree["openstack/latest/vendor_data.json"] = b'{"cloud-init": "#cloud-config\\n"}'
    (warning,) = validate_paths([str(write_tree(tmp_path, tree))])
    assert (warning.severity, warning.source) == ("warning", f"{tmp_path}/openstack/2018-08-27/vendor_data.json")


def test_missing_meta_data_in_the_directory_cloud_init_reads(tmp_path):
    tree = {"openstack/2015-10-15/network_data.json": b"{}",
            "openstack/latest/meta_data.json": json.dumps({"uuid": UUID}).encode()}
    root = write_tree(tmp_path, tree)
    (problem,) = without_consumer_lints(validate_paths([str(root)]))
    assert problem.source == f"{root}/openstack/2015-10-15/meta_data.json"
    # cloud-init then falls back to its version 1 reader, whose complaint is what it raises
    _cloud_init_refuses(root, "NonReadable")


def test_every_file_of_a_drive_is_validated(tmp_path):
    tree = nova_tree()
    tree["ec2/latest/meta-data.json"] = b'{"ami-launch-index": "zero"}'
    tree["openstack/2016-06-30/network_data.json"] = b'{"links": [{"id": "x", "type": "phy"}]}'
    root = write_tree(tmp_path, tree)
    found = {(p.source, p.pointer) for p in errors(validate_paths([str(root)]))}
    assert found == {(f"{root}/ec2/latest/meta-data.json", "/ami-launch-index"),
                     (f"{root}/openstack/2016-06-30/network_data.json", "/links/0/ethernet_mac_address")}


def test_directory_that_is_not_a_drive(tmp_path):
    (problem,) = validate_paths([str(tmp_path)])
    assert "not a config drive" in problem.message


def _cloud_init_refuses(root: Path, reason: str) -> None:
    """cloud-init's reader raises (BrokenMetadata or NonReadable) on this directory."""
    code = ("import sys\nfrom cloudinit.sources import DataSourceConfigDrive as ds\n"
            "ds.read_config_drive(sys.argv[1])\n")
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip("system python3 with cloud-init is not installed")
    proc = run(SYSTEM_PYTHON, "-c", code, root, check=False)
    if b"No module named 'cloudinit'" in proc.stderr:
        pytest.skip("Debian's cloud-init package is not installed")
    assert proc.returncode != 0
    assert reason in proc.stderr.decode(errors="replace")


# -- the command ----------------------------------------------------------------------

def test_command_lists_every_problem_one_per_line_and_exits_1():
    paths = [CORPUS / "invalid" / name for name in sorted(EXPECTED)][:5]
    proc = configdrive("validate", *paths, check=False)
    assert proc.returncode == 1
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 5
    for line, path in zip(lines, paths):
        want = EXPECTED[path.name]
        assert line.startswith(f"error: {path}: {want['pointer'] or '/'}: ")


def test_command_passes_the_valid_corpus():
    proc = configdrive("validate", *VALID)
    assert proc.returncode == 0


def test_command_warnings_pass_unless_strict(tmp_path):
    doc = tmp_path / "network_data.json"
    doc.write_text(json.dumps({"links": [{"id": "e", "type": "macvtap", "ethernet_mac_address": "fa:16:3e:00:00:01"}],
                               "networks": [], "services": []}))
    ok = configdrive("validate", doc)
    assert "warning: " in ok.stdout.decode()
    strict = configdrive("validate", "--strict", doc, check=False)
    assert strict.returncode == 1
    assert f"{doc}: /links/0/type: unknown link type" in strict.stderr.decode()


def test_command_kind_option(tmp_path):
    doc = tmp_path / "data.json"
    doc.write_text("[]")
    assert configdrive("validate", doc, check=False).returncode == 1
    proc = configdrive("validate", "--kind", "vendor_data", doc, check=False)
    assert f"{doc}: /: must be an object, not an array" in proc.stderr.decode()


def test_command_validates_a_drive_directory(tmp_path):
    tree = nova_tree()
    tree["openstack/2018-08-27/meta_data.json"] = b'{"name": "vm"}'
    root = write_tree(tmp_path, tree)
    proc = configdrive("validate", root, check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode().splitlines() == [
        f"error: {root}/openstack/2018-08-27/meta_data.json: /uuid: required key is missing"]


def test_build_validates_by_default_and_no_validate_skips(tmp_path):
    net = tmp_path / "network_data.json"
    net.write_text(json.dumps({"links": [{"id": "e", "type": "phy", "ethernet_mac_address": "fa:16:3e:00:00:01"}],
                               "networks": [{"id": "n", "link": "e0", "type": "ipv4", "ip_address": "10.0.0.300",
                                             "netmask": "255.255.255.0"}],
                               "services": []}))
    out = tmp_path / "drive.iso"
    proc = configdrive("build", "-o", out, "--network-data", net, "--file", f"etc/x={net}", check=False)
    assert proc.returncode == 1
    assert not out.exists()
    assert proc.stderr.decode().splitlines() == [   # one line, every error named
        "configdrive: error: network_data: /networks/0/ip_address: '10.0.0.300' is not an IP address; "
        "network_data: /networks/0/link: names no link: no link has id 'e0'; "
        "files: /0/path: 'etc/x' is not an absolute path"]
    skipped = configdrive("build", "-o", out, "--network-data", net, "--file", f"etc/x={net}", "--no-validate",
                          check=False)
    # past validation: whatever happens next is the image writer's business, not a validation error
    assert "network_data: /networks" not in skipped.stderr.decode()


def test_build_warnings_pass_unless_strict(tmp_path):
    user_data = tmp_path / "user_data"
    user_data.write_bytes(b"#!/bin/sh\n" + b"#" * 70000)
    args = ["build", "-o", tmp_path / "drive.iso", "--uuid", UUID, "--user-data", user_data, "--versions", "latest"]
    strict = configdrive(*args, "--strict", check=False)
    assert strict.returncode == 1
    assert "configdrive: error: user_data: /: 70010 bytes: more than nova's API accepts" in strict.stderr.decode()
    relaxed = configdrive(*args, check=False).stderr.decode()
    assert "configdrive: warning: user_data: /: 70010 bytes" in relaxed
    assert "error: user_data" not in relaxed


def test_help_does_not_import_jsonschema():
    code = ("import sys\nfrom configdrive import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'jsonschema' not in sys.modules, 'jsonschema imported'\n")
    import subprocess, sys
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()


def test_digits_python_reads_as_digits_but_int_refuses_are_no_crash():
    """"²".isdigit() is true and int("²") a ValueError: as a netmask and as a key in a
    pointer they are findings, not tracebacks (found by tests/fuzz's json target)."""
    net = {"links": [{"id": "e", "type": "phy", "ethernet_mac_address": "fa:16:3e:00:00:01"}],
           "networks": [{"id": "n", "link": "e", "type": "ipv4", "ip_address": "10.0.0.2", "netmask": "²"}],
           "services": []}
    assert [str(p) for p in validate.validate_bytes("network_data", json.dumps(net).encode(), "n")] == [
        "n: /networks/0/netmask: '²' is not a netmask"]
    found = validate.validate_bytes("meta_data", json.dumps({"uuid": UUID, "public_keys": {"¹": 1, "2": 2}}).encode(),
                                    "m")
    assert [p.pointer for p in found] == ["/public_keys/2", "/public_keys/¹"]
