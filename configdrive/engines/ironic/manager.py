"""The hardware manager ironic-python-agent finds through its entry point and asks to
``write_image``: our deploy path (configdrive.deploy) in place of IPA's download-to-cache
+ ``qemu-img convert``.

IPA calls the highest-ranked manager that has the method and moves on to the next one
when it raises ``IncompatibleHardwareMethodError``; so this manager takes whole-disk
images it can write and declines the rest (request.py says which), and everything else
(install device, root device hints, later deploy steps) stays IPA's.

Order of work: every refusal that needs no image bytes (request, config drive, checksum
file) comes first; then ``configdrive.deploy.deploy`` streams the image straight onto the
disk, raw or qcow2 alike (no copy in the ramdisk: a ramdisk's /tmp is RAM, and IPA's
cache of a qcow2 is what makes the RAM a node needs grow with its image), holds the
disk's first and last MiB back until the checksum is proven, wipes the disk to an empty
partition table on any failure, and places the config drive. Failures use IPA's own
error types with our one-line message; transient download failures are retried as IPA
retries them (its ``image_download_connection_retries`` and ``_retry_interval``).
"""

from __future__ import annotations

import os
import re
import ssl
import time
import urllib.request

from oslo_config import cfg
from oslo_log import log

from ironic_python_agent import errors, hardware, utils
from ironic_python_agent.extensions import base as ext_base

from partition.images.checksum import parse_checksum
from partition.writing.copy import wipe_disk
from partition.writing.device import Target, open_target
from partition.errors import PartitionError
from partition.images.image import Buffers

from ...errors import ConfigDriveError
from ...formats.pack import unpack
from ...deploy.fetch import load_drive
from ...version import version
from .config import settings
from .request import BadRequest, Decline, Request, read_image_info

CONF = cfg.CONF
# Under IPA's own logger tree, so the agent's log configuration applies to our lines.
LOG = log.getLogger("ironic_python_agent.hardware_managers.configdrive")
MiB = 1 << 20
# Fewer and smaller buffers in flight for the write, in a ramdisk, where every byte of
# them is RAM the node needs on top of the agent. Measured with the agent's VmHWM and
# tracemalloc: copy.py's read-ahead queue of 6 chunks, qcow2.py's reads of up to 4 MiB and
# image.py's 4 MiB raw chunks (each joined from 1 MiB socket reads) held 21 to 27 MiB of
# image data at once, which made the agent 27-32 MiB larger than with IPA's own path;
# 2 chunks of 1 MiB hold a fraction of that, at no cost in time we could measure. The
# command line keeps the defaults (partition.images.image.Buffers). Decompressing on
# threads holds its units whole: 32 MiB lets small ones (pzstd's frames, xz blocks of
# -T with a small --block-size) run on all cores and leaves xz -T's default blocks (24 MiB
# and more) to one core, a piece at a time.
RAMDISK_BUFFERS = Buffers(queue_depth=2, read_size=1 * MiB, decompress_budget=32 * MiB)


class ConfigDriveHardwareManager(hardware.HardwareManager):
    HARDWARE_MANAGER_NAME = "ConfigDriveHardwareManager"
    HARDWARE_MANAGER_VERSION = "1.0"

    def evaluate_hardware_support(self):
        """Above GENERIC (and IPA's mainline managers), so that our write_image is asked
        first; turned off, we take no part at all."""
        if not settings().write_image:
            return hardware.HardwareSupport.NONE
        return hardware.HardwareSupport.SERVICE_PROVIDER

    def write_image(self, node, ports, image_info, configdrive=None):
        """The ``write_image`` deploy step for whole-disk images (IPA's signature).
        Returns, and records on the standby extension, what IPA's write_image does."""
        if not settings().write_image:
            raise errors.IncompatibleHardwareMethodError(
                details="configdrive: write_image is turned off ([configdrive] write_image)")
        try:
            request = read_image_info(image_info, md5_enabled=CONF.md5_enabled,
                                      agent_auth_strategy=CONF.image_server_auth_strategy)
        except Decline as why:
            _decline(str(why))
        except BadRequest as exc:
            raise _ipa_error(errors.InvalidCommandParamsError, exc, str(exc))
        if configdrive is None:      # as IPA's prepare_image: older ironic sent it inside
            configdrive = image_info.pop("configdrive", None)
        device = hardware.dispatch_to_managers("get_os_install_device", permit_refresh=True)
        standby = _standby()
        if standby is not None and standby.cached_image_id == request.image_id:
            # IPA skips the write when cached_image_id matches (its prepare_image), then
            # adds the config drive again; we write again. IPA's skip stands on a cached
            # file it still holds; we hold none, and the disk may have changed since (a
            # later step failed half-way, the conductor retries the deployment), so the
            # only way to promise "this disk holds this image" is to write it.
            LOG.info("configdrive: image %s was written by this agent before; written again "
                     "(no copy is kept, and the disk may have changed since)", request.image_id)
        LOG.info("configdrive %s: writing image %s to %s", version(), request.image_id, device)
        http_options = _http_options(request)
        drive = _load_config_drive(configdrive, http_options) if configdrive else None
        checksum = _checksum(request, http_options)
        # The install device is opened, locked and identified once, and every attempt,
        # wipe and the root uuid's read act on that descriptor (docs/THREATS.md, names
        # against handles): a /dev/disk/by-* name udev moves meanwhile changes nothing.
        try:
            target = open_target(device)
        except PartitionError as exc:
            raise _ipa_error(errors.ImageWriteError, exc, device, 1, "", str(exc))
        with target:
            _write(request, checksum, target, http_options, drive)
            root_uuid = _disk_identifier(target)
        _record(standby, request.image_id, root_uuid)
        # IPA's generic write_image returns prepare_image's command result as it is:
        # {"result": "prepare_image: image (ID) written to device DEV root_uuid=..."}
        # (extensions/base.py wraps a string result so; hardware.py returns cmd.wait()).
        # Its efi_system_partition_uuid form is for partition images, which we decline.
        return {"result": "prepare_image: image ({}) written to device {} root_uuid={}".format(
            image_info.get("id"), device, root_uuid)}


def _decline(why: str):
    if settings().fallback:
        LOG.info("configdrive: %s; IPA's generic write_image takes over", why)
        raise errors.IncompatibleHardwareMethodError(details=f"configdrive: {why}")
    raise errors.DeploymentError(f"configdrive: {why} (falling back to IPA is turned off: "
                                 "[configdrive] fallback)")


def _ipa_error(kind, cause: Exception | str, *args):
    """IPA's error type (what ironic and operators match on) carrying our one line."""
    error = kind(*args)
    error.details = f"configdrive: {_download_line(cause)}"
    return error


def _standby():
    try:
        return ext_base.get_extension("standby")
    except (errors.ExtensionError, KeyError) as exc:
        LOG.warning("configdrive: the standby extension is not loaded (%s); nothing recorded", exc)
        return None


# -- before the disk is touched ----------------------------------------------------------

def _http_options(request: Request) -> dict:
    """IPA's download settings for our HTTP reader, for every request of the step (the
    checksum file, the config drive, the image): its timeout, the request's proxies (else
    the environment's) and no_proxy, and IPA's TLS options (its TLS version floor, cafile,
    client certificate, insecure). No retries inside the reader: _retrying retries each
    whole request as IPA does, a fixed interval apart (the reader's own budget doubles
    its wait each time: with IPA's default 10 retries 10 s apart that would be hours)."""
    if request.no_proxy:
        os.environ["no_proxy"] = request.no_proxy     # what IPA's downloader does too
    context = utils.create_ssl_context("client")
    if CONF.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        if CONF.cafile:
            context.load_verify_locations(cafile=CONF.cafile)
        else:
            context.load_default_certs()
        if CONF.certfile and CONF.keyfile:
            context.load_cert_chain(CONF.certfile, CONF.keyfile)
    return {"retries": 0, "timeout": CONF.image_download_connection_timeout,
            "handlers": (urllib.request.ProxyHandler(request.proxies or None),
                         urllib.request.HTTPSHandler(context=context))}


def _retrying(fetch):
    """``fetch()`` again after a transient failure (a connection error, a 5xx, a stream cut
    off), CONF.image_download_connection_retries times, CONF.image_download_connection_
    retry_interval seconds apart, as IPA's _download_with_proxy and _download_image do.
    A 4xx is final at once (IPA 13's ImageDownloadFatalError, bug #2098146)."""
    retries = CONF.image_download_connection_retries
    for attempt in range(retries + 1):
        try:
            return fetch()
        except PartitionError as exc:
            if _http_status(exc) or not _raised_in(exc, _SOURCE) or attempt == retries:
                raise
            line = _download_line(exc)
        LOG.warning("configdrive: %s; retry %d of %d in %g s", line, attempt + 1, retries,
                    CONF.image_download_connection_retry_interval)
        time.sleep(CONF.image_download_connection_retry_interval)


def _load_config_drive(configdrive, http_options: dict) -> bytes:
    """The drive image from ironic's form (a URL, or gzip+base64), within the 64 MiB cap:
    decoded before the image is written, so a bad drive refuses with the disk untouched."""
    started = time.monotonic()
    try:
        if not isinstance(configdrive, str):
            raise ConfigDriveError("the configdrive argument: neither a URL nor a gzip+base64 string")
        if configdrive.startswith(("http://", "https://")):
            image = _retrying(lambda: load_drive(configdrive, http_options))
        else:
            image = unpack(configdrive, source="the configdrive argument")
    except (ConfigDriveError, PartitionError) as exc:
        raise _ipa_error(errors.DeploymentError, exc, str(exc))
    LOG.info("configdrive: config drive loaded: %s", _figures(len(image), time.monotonic() - started))
    return image


def _checksum(request: Request, http_options: dict) -> str:
    """``ALGO:HEX``, a checksum file's URL read here (with the step's proxies and TLS,
    retried as IPA retries it) so that deploy gets the digest itself."""
    try:
        expected = _retrying(lambda: parse_checksum(
            request.checksum, request.urls[0], http_options))
    except PartitionError as exc:
        raise _ipa_error(errors.ImageDownloadError, exc, request.image_id, str(exc))
    if expected.algorithm == "md5" and not CONF.md5_enabled:
        raise _ipa_error(errors.InvalidCommandParamsError, "MD5 is disabled in this agent "
                         f"(md5_enabled): {request.checksum}", "md5")
    return f"{expected.algorithm}:{expected.hexdigest}"


# -- the write --------------------------------------------------------------------------

def _write(request: Request, checksum: str, target: Target, http_options: dict,
           drive: bytes | None) -> None:
    """Each URL in turn, as IPA's ImageDownload tries them, and the whole list again after
    a transient failure, as its retry loop does. Unlike IPA 13, a 4xx passes to the next
    URL (a mirror without the image says nothing of the others) and is never retried;
    a checksum mismatch is final (IPA downloads the image again: the conductor reads no
    more from that than from one failure, and every mirror serves the same bytes, so
    ten more downloads only delay the same error by IPA's 100 s). Anything refused about
    the image or the disk is final too."""
    retries = CONF.image_download_connection_retries
    urls, failures = list(request.urls), {}      # URL -> its last failure
    for attempt in range(retries + 1):
        transient = []
        for url in urls:
            started = time.monotonic()
            try:
                summary = _deploy_one(request, url, checksum, target, http_options, drive)
            except (PartitionError, ConfigDriveError) as exc:
                failed = exc
            else:
                _log_summary(url, summary, target.path, time.monotonic() - started)
                return
            # Logged here, outside the except block: oslo.log appends the exception being
            # handled to a warning logged inside one (formatters._get_error_summary),
            # which would say it all twice.
            if isinstance(failed, ConfigDriveError) or not _raised_in(failed, _SOURCE):
                raise _final_error(failed, request, url, target.path, checksum) from failed
            status, line = _http_status(failed), _download_line(failed)
            if status:
                LOG.warning("configdrive: %s; not retried: the server answered %d, it will "
                            "not serve this URL; next URL", line, status)
                failures[url] = f"{line} (not retried: the server answered {status})"
            else:
                LOG.warning("configdrive: %s", line)
                failures[url] = line
                transient.append(url)
        if not transient or attempt == retries:
            break
        urls = transient
        LOG.warning("configdrive: image %s: retry %d of %d in %g s", request.image_id,
                    attempt + 1, retries, CONF.image_download_connection_retry_interval)
        time.sleep(CONF.image_download_connection_retry_interval)
    why = "; ".join(failures.values())
    if transient and retries:
        why += f" (retried {retries} times: image_download_connection_retries)"
    raise _ipa_error(errors.ImageDownloadError, why, request.image_id, why)


def _deploy_one(request: Request, url: str, checksum: str, target: Target, http_options: dict,
                drive: bytes | None) -> dict:
    from ...deploy import deploy
    LOG.info("configdrive: writing %s to %s", url, target.path)
    # The declared format is checked against the bytes written, in the one download: a
    # qcow2 sent as raw is refused before the disk is touched, as IPA's format inspector
    # refuses it (a "raw" image that is really qcow2 would have qemu-img follow its
    # header: CVE-2024-32498's family). A first look by a request of its own let a server
    # show raw bytes to the look and a qcow2 to the download.
    summary = deploy(target, url, checksum=checksum, drive=drive, quiet=False,
                     progress_stream=_LogStream(), http_options=http_options,
                     image_format={"qcow2": "qcow2", "raw": "raw-declared"}.get(
                         request.disk_format, "auto"),
                     buffers=RAMDISK_BUFFERS)
    if drive is None and not (summary.get("table") or {}).get("table"):
        # Like IPA's _validate_partitioning: a disk left without a table fails the step,
        # and (as after any failure of ours) holds an empty table, never the image.
        note = wipe_disk(target)
        raise ConfigDriveError(f"{url}: no partition table on {target.path} after writing the "
                               f"image ({note})")
    return summary


def _final_error(exc: Exception, request: Request, url: str, device: str, checksum: str):
    """IPA's error type for a failure no retry mends, by where it was raised."""
    if _raised_in(exc, _CHECKSUM):
        # Final, see _write; the line already says the disk holds an empty table.
        LOG.error("configdrive: %s; not retried: every mirror serves the same bytes", exc)
        return _ipa_error(errors.ImageChecksumError, f"{exc} (not retried: every mirror "
                          "serves the same bytes)", request.image_id, url,
                          checksum.partition(":")[2], _calculated(exc))
    if isinstance(exc, ConfigDriveError) or _raised_in(exc, _CONFIGDRIVE):
        return _ipa_error(errors.DeploymentError, exc, str(exc))
    if _raised_in(exc, _IMAGE):
        return _ipa_error(errors.InvalidImage, exc, str(exc))
    return _ipa_error(errors.ImageWriteError, exc, device, 1, "", str(exc))


# Where an error was raised, by module name. Not by file path: a checkout or venv in a
# folder named "configdrive" put every partition/ module under ".../configdrive/...", and
# every failure became a DeploymentError (a fresh `git clone` fails so, issue 22's class).
_SOURCE = ("partition.images.source", "partition.images.ranged")
_CHECKSUM = ("partition.images.checksum",)
_IMAGE = ("partition.images.qcow2", "partition.images.image", "partition.images.formats",
          "partition.images.compress")
_CONFIGDRIVE = ("configdrive.",)       # a trailing dot: the package and all below it


def _innermost_frames(exc: BaseException | None):
    """The frame each error of the chain was raised in (its cause's first)."""
    chain = []
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__
    for error in reversed(chain):
        tb = error.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None:
            yield error, tb.tb_frame


def _raised_in(exc: BaseException, modules: tuple[str, ...]) -> bool:
    """Some error of the chain was raised in one of ``modules`` (partition.images.source: while
    fetching bytes; partition.images.checksum: the digest did not match)."""
    return any(_in_modules(frame, modules) for _, frame in _innermost_frames(exc))


def _in_modules(frame, modules: tuple[str, ...]) -> bool:
    name = frame.f_globals.get("__name__", "")
    return any(name.startswith(m) if m.endswith(".") else name == m for m in modules)


def _download_line(exc: BaseException) -> str:
    """The failure's line without what partition/images/source.py adds about its own retry
    budget, which this manager sets to none (it retries whole requests itself)."""
    return re.sub(r" \(no retries left; \w+ sets them\)", "", str(exc))


def _http_status(exc: BaseException) -> int | None:
    """The 4xx status of urllib's HTTPError under a download failure, if that is what it
    was (partition/images/source.py retries 5xx, and raises a 4xx as final)."""
    import urllib.error
    while exc is not None:
        if isinstance(exc, urllib.error.HTTPError) and exc.code < 500:
            return exc.code
        exc = exc.__cause__
    return None


def _calculated(exc: BaseException) -> str:
    for _, frame in _innermost_frames(exc):
        if _in_modules(frame, _CHECKSUM) and "actual" in frame.f_locals:
            return str(frame.f_locals["actual"]).lower()
    return "?"


def _log_summary(url: str, summary: dict, device: str, seconds: float) -> None:
    image = summary["image"]
    LOG.info("configdrive: wrote %s (%s%s) to %s: %s, %s checksum verified before the first "
             "MiB", url, image["format"], f" inside {image['compression']}" if image["compression"] else "",
             device, _figures(image["bytes_written"], image["seconds"]),
             image["checksum"]["algorithm"])
    drive = summary.get("config_drive")
    if drive:
        part = drive["partition"]
        LOG.info("configdrive: config drive (%s) written to partition %s of %s (%s)%s",
                 drive["drive"]["format"], part["number"], device,
                 "created" if part["created"] else "found",
                 f"; {'; '.join(drive['notes'])}" if drive["notes"] else "")
    for note in (summary.get("table") or {}).get("notes", []):
        LOG.info("configdrive: %s", note)
    LOG.info("configdrive: image and config drive done in %.2f s", seconds)


# -- after the image ---------------------------------------------------------------------

def _disk_identifier(target: Target) -> str:
    """The MBR disk signature, as IPA's get_disk_identifier reports it (0x%08x of the
    four bytes at 440): ironic passes it to chain.c32 as the root "uuid"."""
    return "0x%08x" % int.from_bytes(os.pread(target.fd, 4, 440), "little")


def _record(standby, image_id: str, root_uuid: str) -> None:
    """What prepare_image leaves on the standby extension for later commands
    (get_partition_uuids, whose "root uuid" the conductor's prepare_instance_boot reads,
    and cached_image_id)."""
    if standby is not None:
        standby.partition_uuids = {"root uuid": root_uuid}
        standby.cached_image_id = image_id


def _figures(count: int, seconds: float) -> str:
    rate = count / MiB / seconds if seconds > 0 else 0.0
    return f"{count} bytes in {seconds:.2f} s ({rate:.1f} MiB/s)"


class _LogStream:
    """Progress lines (partition/progress.py, every 10 s) into IPA's log."""

    def write(self, text: str) -> None:
        if text.strip():
            LOG.info("%s", text.strip())

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False
