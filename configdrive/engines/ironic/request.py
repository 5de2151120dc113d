"""Read ironic's ``image_info`` into what our writer needs, or decline it.

No ironic-python-agent import here: this is plain data in, plain data out, so it can be
tested without the agent. ``manager.py`` turns the outcomes into the agent's error types.

Two kinds of "no":

- :class:`Decline`: a request we do not handle but the agent does (partition images,
  formats only qemu-img converts, hash algorithms or image-server logins we do not
  speak). The manager hands these to IPA's generic ``write_image`` (when configured to).
- :class:`BadRequest`: a request nobody should carry out (no checksum, a checksum of the
  wrong length, MD5 while the agent has MD5 disabled). Failing here is what IPA does too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from partition.images.checksum import ALGORITHMS, BY_LENGTH
from partition.images.source import is_url

from ...errors import ConfigDriveError

# What our writer reads by content. ironic sends glance's disk_format; "raw" and "qcow2"
# are the ones IPA also permits by default (its permitted_image_formats: raw, gpt, qcow2;
# "gpt" is what its inspector calls a raw disk with a GPT).
WRITABLE_FORMATS = ("raw", "qcow2")


class Decline(Exception):
    """Not ours to do; the agent's generic path can. ``str()`` says what and why."""


class BadRequest(ConfigDriveError):
    """The request itself is wrong (one line naming the image_info field)."""


@dataclass
class Request:
    image_id: str
    urls: list[str]
    checksum: str               # "ALGO:HEX", or the URL of a checksum file
    disk_format: str | None     # as declared; checked against the content before writing
    streamed: bool = True       # False: fetched whole and verified before writing (IPA's cache)
    proxies: dict = field(default_factory=dict)
    no_proxy: str | None = None


def read_image_info(image_info: dict, *, md5_enabled: bool = False,
                    agent_auth_strategy: str | None = None) -> Request:
    """Check ``image_info`` (the dict ironic sends to the ``write_image`` deploy step) and
    say what to fetch and how to verify it. Raises Decline or BadRequest."""
    if not isinstance(image_info, dict):
        raise BadRequest("image_info: not an object")
    image_id = str(image_info.get("id") or "image")
    if image_info.get("image_type") == "partition":
        raise Decline("image_type partition: IPA lays out the partitions and writes the root "
                      "partition itself")
    disk_format = image_info.get("disk_format")
    if disk_format is not None and disk_format not in WRITABLE_FORMATS:
        raise Decline(f"disk_format {disk_format!r}: only qemu-img in IPA converts it; "
                      f"configdrive writes {' and '.join(WRITABLE_FORMATS)}")
    if (image_info.get("image_request_authorization")
            or image_info.get("image_server_auth_strategy") == "http_basic"
            or agent_auth_strategy == "http_basic"):
        raise Decline("image server authentication: IPA's downloader logs in, ours does not")
    urls = image_info.get("urls")
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise BadRequest("image_info/urls: a list of at least one URL is required")
    others = [u for u in urls if not is_url(u)]
    if others:
        raise Decline(f"image_info/urls: {others[0]!r} is not http(s)")
    proxies = image_info.get("proxies") or {}
    if not isinstance(proxies, dict):
        raise BadRequest("image_info/proxies: not an object")
    # IPA streams only a raw image with stream_raw_images (ironic's default); anything
    # else it downloads whole and verifies before writing, and so do we.
    streamed = bool(image_info.get("stream_raw_images")) and disk_format == "raw"
    return Request(image_id, urls, _checksum(image_info, md5_enabled), disk_format, streamed,
                   {str(k): str(v) for k, v in proxies.items()}, image_info.get("no_proxy"))


def _checksum(image_info: dict, md5_enabled: bool) -> str:
    """IPA's order: os_hash_algo + os_hash_value first, then the legacy ``checksum``
    (typed by its length, or the URL of a checksum file)."""
    algo, value = image_info.get("os_hash_algo"), image_info.get("os_hash_value")
    legacy = image_info.get("checksum")
    if algo or value:
        if not (isinstance(algo, str) and algo and isinstance(value, str) and value):
            raise BadRequest("image_info/os_hash_algo, os_hash_value: both must be non-empty strings")
        algo = algo.lower()
        if algo not in ALGORITHMS:
            raise Decline(f"os_hash_algo {algo!r}: configdrive verifies "
                          f"{', '.join(ALGORITHMS)}; IPA verifies any hashlib algorithm")
        field_name, algorithm, hexdigest = "os_hash_value", algo, value.strip()
    elif legacy:
        if not isinstance(legacy, str):
            raise BadRequest("image_info/checksum: not a string")
        field_name, algorithm, hexdigest = "checksum", None, legacy.strip()
    else:
        raise BadRequest("image_info: no checksum (give os_hash_algo and os_hash_value, "
                         "or checksum)")
    if is_url(hexdigest):
        return hexdigest          # a checksum file; its algorithm is told by its content
    if algorithm is None:
        algorithm = BY_LENGTH.get(len(hexdigest))
        if algorithm is None:
            raise BadRequest(f"image_info/checksum: {len(hexdigest)} characters is the length "
                             f"of none of {', '.join(ALGORITHMS)}")
    if len(hexdigest) != ALGORITHMS[algorithm] or not _is_hex(hexdigest):
        raise BadRequest(f"image_info/{field_name}: not a {algorithm} digest "
                         f"({ALGORITHMS[algorithm]} hex digits)")
    if algorithm == "md5" and not md5_enabled:
        raise BadRequest(f"image_info/{field_name}: MD5 is disabled in this agent (md5_enabled)")
    return f"{algorithm}:{hexdigest.lower()}"


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)
