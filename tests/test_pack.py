"""pack/unpack: the gzip+base64 form ironic accepts, checked against the system's own
gzip and base64 tools and against the way openstacksdk packs (GzipFile, then b64encode)."""

import base64
import gzip
import io
import os

import pytest

from configdrive.errors import ConfigDriveError
from configdrive.formats.pack import pack, unpack
from conftest import run

IMAGE = os.urandom(3000) + bytes(200_000) + b"tail"


def test_pack_is_what_gzip_and_base64_tools_decode(tmp_path):
    packed = pack(IMAGE)
    (tmp_path / "p.txt").write_text(packed)
    decoded = run("sh", "-c", f"base64 -d {tmp_path}/p.txt | gzip -dc").stdout
    assert decoded == IMAGE
    assert pack(IMAGE) == packed            # reproducible: no timestamp inside


def test_unpack_takes_openstacksdk_style_and_wrapped_cli_output(tmp_path):
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", filename="configdrive.iso") as gz:  # as openstacksdk does
        gz.write(IMAGE)
    assert unpack(base64.b64encode(buf.getvalue()).decode()) == IMAGE
    (tmp_path / "img").write_bytes(IMAGE)
    wrapped = run("sh", "-c", f"gzip -c {tmp_path}/img | base64").stdout   # 76-column lines
    assert b"\n" in wrapped.strip()
    assert unpack(wrapped) == IMAGE


def test_unpack_accepts_plain_base64_image_like_the_agent():
    assert unpack(base64.b64encode(IMAGE)) == IMAGE


@pytest.mark.parametrize("text, message", [
    ("not base64 at all!", "not base64"),
    ("", "empty payload"),
    (base64.b64encode(gzip.compress(IMAGE)[:-30]).decode(), "truncated"),
    (base64.b64encode(b"\x1f\x8b\x08\x00garbage-after-header").decode(), "corrupt gzip"),
    (base64.b64encode(gzip.compress(IMAGE) + b"JUNK").decode(), "trailing data"),
])
def test_unpack_refuses_bad_input_with_one_line(text, message):
    with pytest.raises(ConfigDriveError, match=message) as err:
        unpack(text, source="drive.txt")
    assert str(err.value).startswith("drive.txt: ") and "\n" not in str(err.value)


def test_unpack_stops_a_gzip_bomb_at_the_limit():
    bomb = base64.b64encode(gzip.compress(bytes(65 * 1024 * 1024)))
    assert len(bomb) < 200_000
    with pytest.raises(ConfigDriveError, match="limit"):
        unpack(bomb)
