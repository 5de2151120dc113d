"""The hardware manager ironic-python-agent finds through its entry point and asks to
``write_image``: our writer in place of IPA's download-to-cache + ``qemu-img convert``.

IPA calls the highest-ranked manager that has the method and moves on to the next one
when it raises ``IncompatibleHardwareMethodError``; so this manager takes whole-disk
images it can write and declines the rest (request.py says which), and everything else
(install device, root device hints, later deploy steps) stays IPA's.

Order of work: every refusal (request, config drive, held partitions, format, and the
checksum of whatever IPA would not stream: it is downloaded whole and verified first, as
IPA does) comes before the target is opened; then partition/copy.py writes (its first
MiB last; a streamed raw image is verified before that MiB goes down, and the disk wiped
to an empty table on a mismatch); then configdrive/placement.py puts the config drive in
or fits the table to the disk. Failures use IPA's own error types with our one-line
message.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import time
import urllib.request

from oslo_config import cfg
from oslo_log import log

from ironic_python_agent import errors, hardware, utils
from ironic_python_agent.extensions import base as ext_base

from partition.checksum import Expected, parse_checksum
from partition.copy import copy_image
from partition.device import open_target
from partition.errors import PartitionError
from partition.image import Image, open_image
from partition.progress import Progress
from partition.rescan import refuse_held_partitions
from partition.source import open_source

from ..errors import ConfigDriveError
from ..pack import unpack
from ..fetch import load_drive
from ..placement import place_config_drive, refresh_disk
from ..version import version
from .config import settings
from .request import BadRequest, Decline, Request, read_image_info

CONF = cfg.CONF
# Under IPA's own logger tree, so the agent's log configuration applies to our lines.
LOG = log.getLogger("ironic_python_agent.hardware_managers.configdrive")
MiB = 1 << 20
CACHE_CHUNK = 4 * MiB


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
        Returns, and records on the standby extension, what IPA's prepare_image does."""
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
        LOG.info("configdrive %s: writing image %s to %s", version(), request.image_id, device)
        http_options = _http_options(request)
        drive = _load_config_drive(configdrive, http_options) if configdrive else None
        expected = _expected(request, http_options)
        try:
            refuse_held_partitions(device)
        except PartitionError as exc:
            raise _ipa_error(errors.ImageWriteError, exc, device, 1, "", str(exc))
        _write(request, expected, device, http_options)
        _finish_disk(device, drive)
        root_uuid = _disk_identifier(device)
        _record(image_info, root_uuid)
        # prepare_image's result, word for word: whatever read IPA's message reads ours.
        return "image ({}) written to device {} root_uuid={}".format(
            image_info.get("id"), device, root_uuid)


def _decline(why: str):
    if settings().fallback:
        LOG.info("configdrive: %s; IPA's generic write_image takes over", why)
        raise errors.IncompatibleHardwareMethodError(details=f"configdrive: {why}")
    raise errors.DeploymentError(f"configdrive: {why} (falling back to IPA is turned off: "
                                 "[configdrive] fallback)")


def _ipa_error(kind, cause: Exception, *args):
    """IPA's error type (what ironic and operators match on) carrying our one line."""
    error = kind(*args)
    error.details = f"configdrive: {cause}"
    return error


# -- before the disk is touched ----------------------------------------------------------

def _http_options(request: Request) -> dict:
    """IPA's download settings for our HTTP reader, for every request of the step (the
    checksum file, the config drive, the image): its connection retries, interval and
    timeout, the request's proxies (else the environment's) and no_proxy, and IPA's TLS
    options (its TLS version floor, cafile, client certificate, insecure)."""
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
    return {"retries": CONF.image_download_connection_retries,
            "backoff": CONF.image_download_connection_retry_interval,
            "timeout": CONF.image_download_connection_timeout,
            "handlers": (urllib.request.ProxyHandler(request.proxies or None),
                         urllib.request.HTTPSHandler(context=context))}


def _load_config_drive(configdrive, http_options: dict) -> bytes:
    """The drive image from ironic's form (a URL, or gzip+base64), within the 64 MiB cap:
    decoded before the image is written, so a bad drive refuses with the disk untouched."""
    started = time.monotonic()
    try:
        if not isinstance(configdrive, str):
            raise ConfigDriveError("the configdrive argument: neither a URL nor a gzip+base64 string")
        image = load_drive(configdrive, http_options) if configdrive.startswith(("http://", "https://")) \
            else unpack(configdrive, source="the configdrive argument")
    except (ConfigDriveError, PartitionError) as exc:
        raise _ipa_error(errors.DeploymentError, exc, str(exc))
    LOG.info("configdrive: config drive loaded: %s", _figures(len(image), time.monotonic() - started))
    return image


def _expected(request: Request, http_options: dict) -> "_Expected":
    try:
        expected = parse_checksum(request.checksum, request.urls[0], http_options)
    except PartitionError as exc:
        raise _ipa_error(errors.ImageDownloadError, exc, request.image_id, str(exc))
    if expected.algorithm == "md5" and not CONF.md5_enabled:
        raise _ipa_error(errors.InvalidCommandParamsError, "MD5 is disabled in this agent "
                         f"(md5_enabled): {request.checksum}", "md5")
    return _Expected(expected.algorithm, expected.hexdigest)


class _Mismatch(PartitionError):
    def __init__(self, line: str, expected: str, actual: str):
        super().__init__(line)
        self.expected, self.actual = expected, actual


class _Expected(Expected):
    """A checksum mismatch raised as its own type, so that it reaches IPA as
    ImageChecksumError and not as a write error."""

    def check(self, actual: str, image_name: str) -> None:
        try:
            super().check(actual, image_name)
        except PartitionError as exc:
            raise _Mismatch(str(exc), self.hexdigest, actual) from exc


# -- the write --------------------------------------------------------------------------

def _write(request: Request, expected: _Expected, device: str, http_options: dict) -> dict:
    """Try each URL in turn, as IPA does; a URL that cannot be fetched passes to the
    next, an image that is refused fails the step (every mirror holds the same image)."""
    failures = []
    for url in request.urls:
        started = time.monotonic()
        LOG.info("configdrive: fetching %s", url)
        with contextlib.ExitStack() as stack:
            try:
                if request.streamed:
                    spec, verify = url, expected
                else:
                    spec = stack.enter_context(_cached(url, expected, http_options)).name
                    verify = None         # verified whole already
                image = stack.enter_context(open_image(
                    spec, hash_algorithm=verify.algorithm if verify else None,
                    http_options=http_options, on_spool=lambda line: LOG.info("configdrive: %s", line)))
            except _Mismatch as exc:
                raise _checksum_error(exc, request)
            except PartitionError as exc:
                if not _from_download(exc):
                    raise _ipa_error(errors.InvalidImage, exc, str(exc))
                LOG.warning("configdrive: %s", exc)
                failures.append(str(exc))
                continue
            LOG.info("configdrive: %s is %s%s, virtual size %s bytes; opened in %.2f s", url,
                     image.format, f" inside {image.compression}" if image.compression else "",
                     image.virtual_size, time.monotonic() - started)
            _check_format(image, request)
            return _copy(image, request, verify, device)
    raise _ipa_error(errors.ImageDownloadError, "; ".join(failures), request.image_id,
                     "; ".join(failures))


@contextlib.contextmanager
def _cached(url: str, expected: _Expected, http_options: dict):
    """IPA's cache path, for what it does not stream: the whole download into a temporary
    file (the ramdisk's tmpfs), hashed on the way and checked before anything is written,
    so that a mismatch leaves the disk as it was. Removed afterwards."""
    started = time.monotonic()
    hasher = expected.new()
    with tempfile.NamedTemporaryFile(prefix="configdrive-image-") as cache:
        with open_source(url, **http_options) as source:
            while chunk := source.read(CACHE_CHUNK):
                hasher.update(chunk)
                try:
                    cache.write(chunk)
                except OSError as exc:
                    raise PartitionError(f"{cache.name}: caching {url} failed: {exc.strerror}") from exc
        cache.flush()
        expected.check(hasher.hexdigest(), url)
        LOG.info("configdrive: downloaded %s to %s and verified its %s: %s", url, cache.name,
                 expected.algorithm, _figures(cache.tell(), time.monotonic() - started))
        yield cache


def _check_format(image: Image, request: Request) -> None:
    if request.disk_format and image.format != request.disk_format:
        # IPA's inspector refuses the same (a "raw" image that is really qcow2 would have
        # qemu-img follow its header: CVE-2024-32498's family).
        raise _ipa_error(errors.InvalidImage, f"{image.name}: declared disk_format "
                         f"{request.disk_format} but the content is {image.format}",
                         f"declared {request.disk_format}, content {image.format}")


def _copy(image: Image, request: Request, expected: "_Expected | None", device: str) -> dict:
    progress = Progress(f"configdrive: writing {image.name} to {device}", None, stream=_LogStream())
    try:
        with open_target(device) as target:
            result = copy_image(image, target, expected=expected, progress=progress)
    except PartitionError as exc:
        mismatch = exc.__cause__ if isinstance(exc.__cause__, _Mismatch) else None
        if isinstance(exc, _Mismatch) or mismatch:
            raise _checksum_error(exc, request)
        if _from_download(exc):
            raise _ipa_error(errors.ImageDownloadError, exc, request.image_id, str(exc))
        raise _ipa_error(errors.ImageWriteError, exc, device, 1, "", str(exc))
    LOG.info("configdrive: wrote %s to %s: %s%s", image.name, device,
             _figures(result["bytes_written"], result["seconds"]),
             f", {expected.algorithm} checksum verified" if expected else "")
    return result


def _checksum_error(exc: PartitionError, request: Request):
    cause = exc if isinstance(exc, _Mismatch) else exc.__cause__
    return _ipa_error(errors.ImageChecksumError, exc, request.image_id, request.urls[0],
                      cause.expected, cause.actual)


def _from_download(exc: BaseException | None) -> bool:
    """Raised while fetching bytes (partition/source.py), not while reading them: some
    error of the chain was raised there (its own cause, urllib's HTTPError or an
    OSError, was raised inside urllib or the socket layer)."""
    source = os.path.join("partition", "source.py")
    while exc is not None:
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None and tb.tb_frame.f_code.co_filename.endswith(source):
            return True
        exc = exc.__cause__
    return False


# -- after the image ---------------------------------------------------------------------

def _finish_disk(device: str, drive: bytes | None) -> None:
    """Config drive into the config partition (or a new one), or else the GPT fitted to
    the disk; like IPA's _validate_partitioning, a disk left without a table fails."""
    started = time.monotonic()
    try:
        if drive is not None:
            summary = place_config_drive(device, drive)
            part = summary["partition"]
            LOG.info("configdrive: config drive (%s) written to partition %s of %s (%s): %s%s",
                     summary["drive"]["format"], part["number"], device,
                     "created" if part["created"] else "found",
                     _figures(summary["drive"]["bytes"], time.monotonic() - started),
                     f"; {'; '.join(summary['notes'])}" if summary["notes"] else "")
        else:
            summary = refresh_disk(device)
            for note in summary["notes"]:
                LOG.info("configdrive: %s", note)
    except (ConfigDriveError, PartitionError) as exc:
        raise _ipa_error(errors.DeploymentError, exc, str(exc))
    if not summary["table"]:
        raise errors.DeploymentError(f"configdrive: no partition table on {device} after "
                                     "writing the image")
    LOG.info("configdrive: partition table and kernel view done in %.2f s", time.monotonic() - started)


def _disk_identifier(device: str) -> str:
    """The MBR disk signature, as IPA's get_disk_identifier reports it (0x%08x of the
    four bytes at 440): ironic passes it to chain.c32 as the root "uuid"."""
    with open(device, "rb") as fp:
        fp.seek(440)
        return "0x%08x" % int.from_bytes(fp.read(4), "little")


def _record(image_info: dict, root_uuid: str) -> None:
    """What prepare_image leaves on the standby extension for later commands
    (get_partition_uuids, a repeated prepare_image)."""
    try:
        standby = ext_base.get_extension("standby")
    except (errors.ExtensionError, KeyError) as exc:
        LOG.warning("configdrive: the standby extension is not loaded (%s); nothing recorded", exc)
        return
    standby.partition_uuids = {"root uuid": root_uuid}
    standby.cached_image_id = image_info.get("id")


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
