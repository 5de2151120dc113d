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
``meta_data_uuid_missing``, ``label_duplicate``.
"""

from __future__ import annotations

import pytest


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
