"""pytest fixtures for datasource tests, registered through the ``pytest11`` entry point:
installing configdrive is enough to have them.

pytest loads this module in every run of every project whose environment has configdrive
installed, so it imports nothing but pytest here; the drive code (configdrive.engines.testing)
is imported when a test first asks for a fixture.

    def test_reads_hostname(config_drive_tree):
        tree = config_drive_tree(hostname="node-7", user_data="#cloud-config\\n")
        ...

Fixtures (each a factory: call it, get a Path under the test's tmp_path):
``config_drive(**content, format="iso"|"vfat"|"nocloud"|"nocloud-vfat", versions=..., label=...)``,
``config_drive_tree(**content, ...)``, ``config_disk(image=None, **content, ...)``, and
``broken_config_drive`` whose methods are named after the field they break:
``label_uppercase``, ``versions_oldest_and_latest``, ``network_data_mtu_null``,
``meta_data_uuid_missing``, ``label_duplicate``; and ``booted_guest(image=None, **content,
attach=..., ...)``, which boots a cloud image under QEMU with the drive and returns
cloud-init's verdict (configdrive.Verdict): the image from the call, else from
the environment variable CONFIGDRIVE_BOOT_IMAGE, else the test is skipped.
"""

from __future__ import annotations

import os

import pytest

# Where booted_guest finds the image when the test names none.
BOOT_IMAGE_ENV = "CONFIGDRIVE_BOOT_IMAGE"


@pytest.fixture
def _configdrive_maker(tmp_path):
    from configdrive.engines.testing import DriveMaker
    return DriveMaker(tmp_path)


@pytest.fixture
def config_drive(_configdrive_maker):
    """``config_drive(**content, format=, versions=, label=, ec2=, size=) -> Path``: a
    drive image built in tmp_path. Content keywords: meta_data, user_data, network_data,
    vendor_data, vendor_data2, network_config, files ({guest path: data}), uuid, hostname,
    name, ssh_keys (key lines), admin_pass, random_seed."""
    return _configdrive_maker.drive


@pytest.fixture
def config_drive_tree(_configdrive_maker):
    """``config_drive_tree(**content, format=, versions=, ec2=) -> Path``: the same files
    as an extracted directory."""
    return _configdrive_maker.tree


@pytest.fixture
def config_disk(_configdrive_maker):
    """``config_disk(image=None, **content, disk_size=, format=, label=) -> Path``: a whole
    GPT disk image with the drive in its config partition."""
    return _configdrive_maker.disk


@pytest.fixture
def broken_config_drive(_configdrive_maker):
    """Broken drives that real producers emit, one method per field they break:
    ``label_uppercase``, ``versions_oldest_and_latest``, ``network_data_mtu_null``,
    ``meta_data_uuid_missing``, ``label_duplicate`` (a disk); each takes the content
    keywords and returns a Path."""
    return _configdrive_maker


@pytest.fixture
def booted_guest(tmp_path):
    """``booted_guest(image=None, *, drive=None, attach="cdrom", **content_and_options)
    -> Verdict``: boot ``image`` (qcow2 or raw; $CONFIGDRIVE_BOOT_IMAGE when None; the
    test is skipped when neither names one) under QEMU on a copy-on-write overlay, with
    the drive built from the content keywords (or ``drive``, a ready image) attached as
    ``attach`` (cdrom, disk, config-partition, nocloud, none); wait for cloud-init to
    finish and the guest to power off; return cloud-init's verdict: datasource and source
    device, status and errors, hostname, keys, rendered network, cloud-init version,
    console log, and ``read_file(path)`` on the guest's disk. Options as for
    the boot job (configdrive boot): uefi, sector_size, timeout, kernel, initrd, append, wait,
    accel, format, label, versions. Fails in one line (configdrive.ConfigDriveError) when
    the guest does not boot, cloud-init never starts or refuses the drive."""
    from configdrive.engines.testing import GuestBooter
    booter = GuestBooter(tmp_path)

    def boot(image=None, **options):
        image = image or os.environ.get(BOOT_IMAGE_ENV)
        if not image:
            pytest.skip(f"no cloud image to boot: pass one to booted_guest(image) or set {BOOT_IMAGE_ENV}")
        return booter(image, **options)
    return boot
