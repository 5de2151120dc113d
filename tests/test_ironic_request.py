"""How configdrive.engines.ironic reads ironic's image_info (no agent needed): which checksum it
verifies, and what it declines to IPA or refuses, each naming the field."""

from __future__ import annotations

import hashlib

import pytest

from configdrive.engines.ironic.request import BadRequest, Decline, read_image_info

SHA256 = hashlib.sha256(b"image").hexdigest()
SHA512 = hashlib.sha512(b"image").hexdigest()
MD5 = hashlib.md5(b"image").hexdigest()
URL = "http://127.0.0.1/disk.qcow2"


def info(**extra):
    base = {"id": "i1", "urls": [URL], "image_type": "whole-disk", "disk_format": "qcow2"}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize("fields,expected", [
    ({"os_hash_algo": "sha256", "os_hash_value": SHA256}, f"sha256:{SHA256}"),
    ({"os_hash_algo": "SHA512", "os_hash_value": SHA512.upper()}, f"sha512:{SHA512}"),
    ({"checksum": SHA256}, f"sha256:{SHA256}"),              # typed by its length
    ({"checksum": SHA512}, f"sha512:{SHA512}"),
    ({"checksum": "https://example.org/SHA256SUMS"}, "https://example.org/SHA256SUMS"),
    ({"os_hash_algo": "sha256", "os_hash_value": "http://h/SUMS"}, "http://h/SUMS"),
    # os_hash_* wins over the legacy field, as in IPA
    ({"os_hash_algo": "sha512", "os_hash_value": SHA512, "checksum": SHA256}, f"sha512:{SHA512}"),
])
def test_checksum_as_ipa_reads_it(fields, expected):
    assert read_image_info(info(**fields)).checksum == expected


def test_md5_only_where_the_agent_allows_it():
    with pytest.raises(BadRequest, match="md5_enabled"):
        read_image_info(info(checksum=MD5))
    assert read_image_info(info(checksum=MD5), md5_enabled=True).checksum == f"md5:{MD5}"


@pytest.mark.parametrize("fields,field", [
    ({}, "no checksum"),
    ({"checksum": "abc"}, "image_info/checksum: 3 characters"),
    ({"checksum": "z" * 64}, "image_info/checksum: not a sha256 digest"),
    ({"os_hash_algo": "sha256", "os_hash_value": SHA512}, "image_info/os_hash_value: not a sha256"),
    ({"os_hash_algo": "sha256"}, "os_hash_algo, os_hash_value"),
    ({"checksum": SHA256, "urls": []}, "image_info/urls"),
    ({"checksum": SHA256, "urls": "http://x/y"}, "image_info/urls"),
    ({"checksum": SHA256, "proxies": ["x"]}, "image_info/proxies"),
])
def test_bad_requests_name_the_field(fields, field):
    with pytest.raises(BadRequest) as caught:
        read_image_info(info(**fields))
    assert field in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("fields,reason", [
    ({"image_type": "partition"}, "image_type partition"),
    ({"disk_format": "vmdk"}, "disk_format 'vmdk'"),
    ({"disk_format": "vhdx"}, "disk_format 'vhdx'"),
    ({"disk_format": "iso"}, "disk_format 'iso'"),
    ({"os_hash_algo": "sha384", "os_hash_value": "0" * 96}, "os_hash_algo 'sha384'"),
    ({"image_server_auth_strategy": "http_basic"}, "image server authentication"),
    ({"image_request_authorization": "QmFzaWMgeDp5"}, "image server authentication"),
    ({"urls": ["oci://quay.io/x/y"]}, "'oci://quay.io/x/y' is not http(s)"),
])
def test_declined_to_ipa_with_the_reason(fields, reason):
    with pytest.raises(Decline) as caught:
        read_image_info(info(checksum=SHA256, **fields))
    assert reason in str(caught.value)


def test_proxies_and_no_proxy_are_carried():
    request = read_image_info(info(checksum=SHA256, proxies={"http": "http://proxy:3128"},
                                   no_proxy="10.0.0.0/8"))
    assert request.proxies == {"http": "http://proxy:3128"}
    assert request.no_proxy == "10.0.0.0/8"
    assert request.urls == [URL] and request.disk_format == "qcow2"


@pytest.mark.parametrize("fields,streamed", [
    ({"disk_format": "raw", "stream_raw_images": True}, True),
    ({"disk_format": "raw"}, False),                 # IPA's default when ironic leaves it out
    ({"disk_format": "qcow2", "stream_raw_images": True}, False),
    ({"disk_format": None, "stream_raw_images": True}, False),
])
def test_streamed_only_where_ipa_streams(fields, streamed):
    assert read_image_info(info(checksum=SHA256, **fields)).streamed is streamed


def test_core_package_never_imports_the_agent():
    """Only the agent loads configdrive.engines.ironic's manager; everything else imports without
    ironic-python-agent (this venv does not have it)."""
    import subprocess
    import sys
    code = ("import sys, configdrive.cli, configdrive.deploy, configdrive.deploy.placement, "
            "configdrive.engines.ironic, configdrive.engines.ironic.request; "
            "assert 'ironic_python_agent' not in sys.modules; "
            "import importlib.util; print(importlib.util.find_spec('ironic_python_agent'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
