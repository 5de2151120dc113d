"""The ``configdrive`` command: parsing arguments and printing results; the process's
stderr is its alone (the layers below raise and log, and this module says what reaches
the user).

Exit status: 0 on success, 2 for a command line that cannot be parsed, 1 for anything
refused or failed, with one line ``configdrive: error: WHAT`` on stderr (``--debug``
shows the traceback, with every cause in the chain). Heavy modules are imported inside
the handlers so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from typing import Callable, Iterator, Sequence

PROG = "configdrive"


# -- options shared by the commands that take drive content -------------------------

def add_content_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("drive content (as for build)")
    g.add_argument("--meta-data", metavar="F", help="meta_data.json (OpenStack)")
    g.add_argument("--user-data", metavar="F", help="user data: any bytes (cloud-config, script, MIME, gzip)")
    g.add_argument("--network-data", metavar="F", help="network_data.json")
    g.add_argument("--vendor-data", metavar="F", help="vendor_data.json")
    g.add_argument("--vendor-data2", metavar="F", help="vendor_data2.json")
    g.add_argument("--network-config", metavar="F",
                   help="NoCloud network-config (YAML, version 1 or 2); default: converted from network_data")
    g.add_argument("--ironic", metavar="F", help="the ironic API's configdrive object (JSON)")
    g.add_argument("--ec2-meta-data", metavar="F",
                   help="ec2 meta-data.json keys to write as given (instance-id, instance-type, ami-id, "
                        "public-ipv4, reservation-id, security-groups, ...)")
    g.add_argument("--file", metavar="GUEST_PATH=LOCAL", action="append", default=[], type=_file_spec,
                   help="inject a file (openstack/content/NNNN and a meta_data files entry); repeatable")
    g.add_argument("--uuid", help="meta_data uuid (cloud-init's instance-id)")
    g.add_argument("--hostname", help="meta_data hostname")
    g.add_argument("--name", help="meta_data name")
    g.add_argument("--ssh-key", metavar="F", action="append", default=[],
                   help="OpenSSH public key file (one key a line); repeatable")
    password = g.add_mutually_exclusive_group()
    password.add_argument("--admin-pass-file", metavar="F",
                          help="meta_data admin_pass: the file's first line, or - for stdin")
    password.add_argument("--admin-pass", metavar="PASSWORD",
                          help="meta_data admin_pass (visible to other users through ps: prefer --admin-pass-file)")
    g.add_argument("--random-seed", action="store_true", help="add meta_data random_seed (512 random bytes)")
    g.add_argument("--example", action="store_true",
                   help="start from the built-in example instance (other options override it)")


def add_format_options(p: argparse.ArgumentParser, sector_size: bool = False, nocloud: bool = False) -> None:
    g = p.add_argument_group("drive format")
    formats = ("iso", "vfat") + (("nocloud", "nocloud-vfat") if nocloud else ())
    g.add_argument("--format", choices=formats, default=None,
                   help="filesystem (default iso); nocloud: a cloud-init NoCloud seed (ISO or vfat)")
    g.add_argument("--label", help="volume label (default config-2, cidata for NoCloud seeds)")
    g.add_argument("--size", type=_drive_size, metavar="BYTES",
                   help="vfat image size, 1M to 2G, e.g. 64M (default 64 MiB)")
    if sector_size:   # deploy takes the sector size from the target disk
        g.add_argument("--sector-size", type=int, choices=(512, 1024, 2048, 4096), metavar="BYTES",
                       help="vfat logical sector size: 512 (default), 1024, 2048 or 4096; "
                            "a drive for a 4096-byte-sector (4Kn) disk needs 4096")
    g.add_argument("--versions", metavar="LIST",
                   help="OpenStack version directories to write, e.g. 2012-08-10,latest (default all)")
    g.add_argument("--no-ec2", dest="ec2", action="store_false", help="leave out the ec2/ tree")
    g.add_argument("--no-validate", dest="validate", action="store_false",
                   help="skip validation (the JSON types are still checked)")
    g.add_argument("--strict", action="store_true", help="treat validation warnings as errors")


def has_content_options(args: argparse.Namespace) -> bool:
    return bool(args.example or args.meta_data or args.user_data or args.network_data
                or args.vendor_data or args.vendor_data2 or args.ironic or args.ec2_meta_data or args.file
                or args.uuid or args.hostname or args.name or args.ssh_key or args.admin_pass
                or args.admin_pass_file)


def _admin_pass(args: argparse.Namespace) -> str | None:
    """The password the options give, after the checks every content command shares: at
    most one input reads stdin, and a password on the command line is warned about."""
    from .model.inputs import read_admin_pass
    from .errors import ConfigDriveError
    readers = [opt for opt, value in (("--meta-data", args.meta_data), ("--user-data", args.user_data),
                                      ("--network-data", args.network_data), ("--vendor-data", args.vendor_data),
                                      ("--vendor-data2", args.vendor_data2), ("--ironic", args.ironic),
                                      ("--ec2-meta-data", args.ec2_meta_data),
                                      ("--admin-pass-file", args.admin_pass_file),
                                      *(("--ssh-key", key) for key in args.ssh_key),
                                      *(("--file", spec.partition("=")[2]) for spec in args.file))
               if value == "-"]
    if len(readers) > 1:
        raise ConfigDriveError(f"{' and '.join(readers)}: only one input can be read from stdin (-)")
    if args.admin_pass is not None:
        print(f"{PROG}: warning: --admin-pass is visible to other users of this machine through ps "
              "and /proc; use --admin-pass-file", file=sys.stderr)
    return read_admin_pass(args.admin_pass_file) if args.admin_pass_file else args.admin_pass


def content_from_args(args: argparse.Namespace):
    from .model.inputs import content_from_files
    from .examples import example_paths
    admin_pass = _admin_pass(args)
    ex = example_paths() if args.example else {}
    return content_from_files(
        ironic=args.ironic,
        meta_data=args.meta_data or ex.get("meta_data"),
        user_data=args.user_data or ex.get("user_data"),
        network_data=args.network_data or ex.get("network_data"),
        vendor_data=args.vendor_data or ex.get("vendor_data"),
        vendor_data2=args.vendor_data2 or ex.get("vendor_data2"), ec2=args.ec2_meta_data,
        network_config=args.network_config,
        files=args.file,
        ssh_keys=args.ssh_key or ex.get("ssh_keys", []),
        uuid=args.uuid, name=args.name, hostname=args.hostname,
        admin_pass=admin_pass, random_seed=args.random_seed,
    )


def _size(text: str) -> int:
    """A byte count as people write it (64M, 1.5G, 4096): a whole, positive number of
    bytes. float() also reads inf, nan and 1e999, which are not sizes."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in units else ""
    number = t[: len(t) - len(unit)]
    try:
        value = float(number) * units[unit]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (say 64M, 1G or a byte count)") from exc
    if not math.isfinite(value) or value <= 0 or value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: want a whole, positive number of bytes")
    return int(value)


def _drive_size(text: str) -> int:
    """The size of a config drive (--size) or of the partition made for one
    (--config-size): what the vfat writer can make, 1 MiB to 2 GiB."""
    from .formats.fatgeometry import MAX_SIZE, MIN_SIZE
    size = _size(text)
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise argparse.ArgumentTypeError(f"{text!r}: a config drive takes {MIN_SIZE >> 20} MiB to "
                                         f"{MAX_SIZE >> 30} GiB")
    return size


def _file_spec(spec: str) -> str:
    """``GUEST_PATH=LOCAL`` of --file, its form checked before anything is read; what the
    guest path says is validation's business (reported with the others, by pointer)."""
    from .model.inputs import split_file_spec
    try:
        split_file_spec(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return spec


def _mbr_type(text: str) -> int:
    """An MBR partition type id: one byte, in any base int() reads (0x99, 153, 0o231).
    Which bytes would change the partition's meaning is decided in one place for the
    command line and the API (partition.tables.config_partition.check_mbr_type)."""
    try:
        value = int(text, 0)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= 0xFF:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an MBR type id (a byte, 0x01 to 0xff)")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) > 1000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count from 0 to 1000")
    return int(text)


def _guest_memory(text: str) -> int:
    """Guest memory as a size (2G, 1536M): whole MiB, 256 MiB to 1 TiB."""
    mib = _size(text) >> 20
    if not 256 <= mib <= 1 << 20:
        raise argparse.ArgumentTypeError(f"{text!r}: guest memory from 256M to 1T")
    return mib


# -- handlers ----------------------------------------------------------------------

def cmd_build(args: argparse.Namespace) -> int:
    from .drives.builder import write_drive
    from .errors import ConfigDriveError
    tree, fs, problems = _remastered(args) if args.source_drive else _built(args)
    if args.sector_size and fs != "vfat":
        raise ConfigDriveError("--sector-size applies to --format vfat or nocloud-vfat only "
                               "(ISO 9660 has 2048-byte blocks)")
    _report_validation(problems, args.strict)
    to_stdout = args.output == "-"
    image = write_drive(tree, None if to_stdout else args.output, format=fs,
                        label=args.label, size=args.size, sector_size=args.sector_size)
    if to_stdout:
        write_stdout(image)
    else:
        import os
        _say(args, f"wrote {args.output}: {args.format or 'iso'}, {os.path.getsize(args.output)} bytes, "
                   f"label {args.label}")
    return 0


def _built(args: argparse.Namespace):
    """The tree of a new drive (a config drive or a NoCloud seed) from the content options,
    the filesystem that carries it, and what validation says of it."""
    from .drives.builder import NOCLOUD_FORMATS, default_label, drive_tree
    content = content_from_args(args)
    format = args.format or "iso"
    args.label = args.label or default_label(format)
    tree, fs = drive_tree(content, format, versions=args.versions, ec2=args.ec2)
    if not args.validate:
        return tree, fs, []
    from .drives.buildcheck import validate_build   # the checks' modules (and jsonschema) only when asked
    return tree, fs, validate_build(content, tree, label=args.label, versions=args.versions, ec2=args.ec2,
                                    source=args.output, consumers=format not in NOCLOUD_FORMATS)


def _remastered(args: argparse.Namespace):
    """``--from``: the drive's tree with what the options name replaced, and what
    validation says of the result."""
    from .drives.builder import default_label
    from .drives.drive import Drive
    from .drives.reader import open_drive
    from .errors import ConfigDriveError
    from .drives.drivecheck import validate_drive
    from .model.inputs import changes_from_options
    from .model.remaster import remaster
    nocloud = args.format is not None and args.format.startswith("nocloud")
    for given, option in ((args.example, "--example"), (args.versions, "--versions"), (not args.ec2, "--no-ec2"),
                          (nocloud, f"--format {args.format}")):
        if given:
            raise ConfigDriveError(f"--from keeps the drive's own layout: {option} cannot be used with it")
    changes = changes_from_options(
        ironic=args.ironic, meta_data=args.meta_data, user_data=args.user_data,
        network_data=args.network_data, vendor_data=args.vendor_data, vendor_data2=args.vendor_data2,
        ec2=args.ec2_meta_data, files=args.file, ssh_keys=args.ssh_key, random_seed=args.random_seed,
        uuid=args.uuid, name=args.name, hostname=args.hostname, admin_pass=_admin_pass(args))
    source = open_drive(args.source_drive)
    if args.format is None:   # a re-master keeps the drive's filesystem unless told otherwise
        args.format = "vfat" if source.format == "vfat" else "iso"
    args.label = args.label or default_label(args.format)
    tree = remaster(source.tree, changes, args.source_drive)
    problems = validate_drive(Drive(args.source_drive, "built", args.label, tree)) if args.validate else []
    return tree, args.format, problems


def _report_validation(problems, strict: bool) -> None:
    """Errors (and, with --strict, warnings) stop the build in one line (``validate``
    lists each); when the build goes on, its warnings are printed."""
    from .errors import ConfigDriveError
    from .documents.problems import refusal_line
    errors = [p for p in problems if p.severity == "error" or strict]
    if errors:
        raise ConfigDriveError(refusal_line(errors))
    for p in problems:
        print(f"{PROG}: warning: {p}", file=sys.stderr)


def cmd_inspect(args: argparse.Namespace) -> int:
    from .drives.reader import open_drive
    from .errors import one_line
    summary = open_drive(args.drive).summary()
    if args.json:   # json.dumps escapes control characters itself
        print(json.dumps(_versioned(summary), indent=2))
        return 0

    def show(value) -> str:
        """A value read from the drive, one line whatever it holds (a name or hostname
        with a newline would otherwise forge lines of this output)."""
        return one_line(str(value))

    part = summary["partition"]
    print(f"source:    {show(summary['source'])}")
    if part:
        print(f"partition: #{part.get('number')} at byte {part.get('start')} "
              f"({part.get('size')} bytes), found by {show(part.get('identity'))}")
    print(f"format:    {summary['format']}")
    print(f"label:     {show(summary['label'])}")
    print(f"versions:  {show(', '.join(summary['versions']) or '-')}")
    print(f"ec2:       {show(', '.join(summary['ec2_versions']) or '-')}")
    print(f"uuid:      {show(summary['uuid'])}")
    print(f"hostname:  {show(summary['hostname'])}")
    print(f"keys:      {show(', '.join(map(str, summary['public_keys'])) or '-')}")
    print(f"network:   {summary['links']} links, {summary['networks']} networks, {summary['services']} services")
    print(f"files:     {len(summary['files'])}")
    for f in summary["files"]:
        print(f"  {f['size']:>10}  {show(f['path'])}")
    for note in summary["notes"]:
        print(f"note: {show(note)}")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from .drives.extract import extract_drive
    from .errors import one_line
    drive = extract_drive(args.drive, args.dir)
    _say(args, one_line(f"extracted {len(drive.tree)} files from {args.drive} ({drive.format}) to {args.dir}"))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .drives.pathcheck import validate_paths
    problems = validate_paths(args.files, kind=args.kind)
    failing = [p for p in problems if p.severity == "error" or args.strict]
    for p in problems:
        level = "error" if p in failing else "warning"
        print(f"{level}: {p}", file=sys.stderr if failing else sys.stdout)
    if failing:
        return 1
    _say(args, f"{len(args.files)} file(s) valid" + (f", {len(problems)} warning(s)" if problems else ""))
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from .formats.pack import pack_file
    pack_file(args.drive, sys.stdout.write)
    print()
    return 0


def cmd_unpack(args: argparse.Namespace) -> int:
    from .formats.pack import unpack_file
    image = unpack_file(args.text_file)
    if args.output == "-":
        write_stdout(image)
    else:
        from pathlib import Path
        from .files.output import atomic_output
        with atomic_output(Path(args.output)) as fp:
            fp.write(image)
        _say(args, f"wrote {args.output}: {len(image)} bytes")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from partition.images.ordered import hold_freed_memory
    from .deploy import deploy
    hold_freed_memory()      # a one-shot process: see there why
    # The drive: a ready one (--config-drive), or content options built like `build` does.
    drive = args.config_drive or (content_from_args(args) if has_content_options(args) else None)
    http = {k: v for k, v in (("deadline", args.http_deadline), ("retries", args.http_retries))
            if v is not None}
    # SIGTERM (systemd stopping the agent, ironic's abort) as Ctrl-C: without a handler
    # the process dies with the disk in a SIGKILL's state (no table, no line saying why);
    # with one, the copy and the placement wipe the disk and the error says so.
    with _log_to_stderr(args), _sigterm_as_interrupt():
        summary = deploy(args.device, args.image, checksum=args.checksum, drive=drive,
                         preserve_on_error=args.preserve_on_error, verify=args.verify, quiet=args.quiet,
                         create=args.create, image_format=args.image_format, http_options=http,
                         config_size=args.config_size, mbr_type=args.mbr_type, format=args.format,
                         label=args.label, size=args.size, versions=args.versions, ec2=args.ec2,
                         validate=args.validate)
    if args.json:
        print(json.dumps(_versioned(summary), indent=2))
    written = _written(args.device, summary["target"])
    if summary["image"]:
        s = summary["image"]
        _say(args, f"{PROG}: wrote {s['source']} ({s['format']}"
                   f"{', a hybrid ISO' if s['detected'] == 'iso-hybrid' else ''}"
                   f"{', ' + s['compression'] if s['compression'] else ''}) to {written}: "
                   f"{s['virtual_size']} bytes in {s['seconds']:.1f}s"
                   f"{', ' + s['checksum']['algorithm'] + ' verified' if s['checksum'] else ''}"
                   f"{', read back and verified' if s['verified'] else ''}")
    if summary["config_drive"]:
        c, p = summary["config_drive"], summary["config_drive"]["partition"]
        _say(args, f"{PROG}: wrote the {c['drive']['format']} drive labelled {c['drive']['label']} to "
                   f"partition {p['number']} ({'created, ' if p['created'] else ''}found by {p['identity']}) "
                   f"at byte {p['start']} of {written}{', node ' + p['node'] if p['node'] else ''}")
        for note in c["notes"]:
            _say(args, f"{PROG}: note: {note}")
    return 0


def cmd_boot(args: argparse.Namespace) -> int:
    from .engines.boot import boot, remove_disks
    from .errors import ConfigDriveError
    content = content_from_args(args) if has_content_options(args) else None
    if content is not None and args.drive:
        raise ConfigDriveError("--drive is a ready drive: give it or drive content options, not both")
    drive = args.drive or content
    if drive is None and args.attach != "none":
        raise ConfigDriveError(f"--attach {args.attach}: give --drive DRIVE or drive content options "
                               "(--hostname, --user-data, ...), or --attach none")
    with _log_to_stderr(args), _sigterm_as_interrupt():
        verdict = boot(args.image, drive, attach=args.attach, workdir=args.workdir, uefi=args.uefi,
                       sector_size=args.sector_size, timeout=args.timeout, kernel=args.kernel,
                       initrd=args.initrd, append=args.append, wait=args.wait, accel=args.accel,
                       memory_mib=args.memory, format=args.format, label=args.label, size=args.size,
                       versions=args.versions, ec2=args.ec2, validate=args.validate)
        if not args.keep_disks:
            remove_disks(verdict)
    if args.json:
        print(json.dumps(_versioned(verdict.to_json()), indent=2))
        return 0
    print(f"booted {args.image} ({verdict.how}) in {verdict.seconds:.0f} s, "
          f"stopped by {verdict.stopped}, cloud-init {verdict.cloud_init_version or 'not seen'}")
    rows = [("datasource", verdict.datasource), ("source", verdict.source), ("hostname", verdict.hostname),
            ("errors", "; ".join(verdict.errors) or "none")]
    rows += [("keys", f"{path}: {len(keys)}") for path, keys in verdict.keys.items()]
    rows += [("network", path) for path in verdict.network]
    rows += [("console", verdict.console_log), ("cloud-init log", verdict.cloud_init_log)]
    rows += [("unread", f"{what}: {why}") for what, why in verdict.unread.items()]
    for key, value in rows:
        print(f"{key}: {value if value is not None else '-'}")
    return 0


def _written(name: str, target: dict) -> str:
    """The device a deploy wrote, as the summary line names it: the name given, and the
    device that name led to when the deploy opened it (major:minor, kernel name, by-id
    name), which is the one written even if the name points elsewhere by now."""
    if target["kind"] == "file":
        return name
    known = ", ".join(x for x in (target["name"], target["by_id"]) if x)
    return f"{name} (block device {target['dev']}{', ' + known if known else ''})"


def cmd_inject(args: argparse.Namespace) -> int:
    from .inject import inject
    content = content_from_args(args)
    with _log_to_stderr(args), _sigterm_as_interrupt():
        result = inject(args.image, content, handlers=args.handlers, partition=args.partition)
    if args.json:
        print(json.dumps(_versioned(result), indent=2))
    return 0


def _versioned(summary: dict) -> dict:
    """A --json summary with the version that wrote it, for bug reports and for tools
    that read the output of more than one release."""
    from .version import version
    return {**summary, "configdrive_version": version()}


def write_stdout(data: bytes) -> None:
    """All of ``data`` to stdout. A pipe whose reader goes away mid-write takes part of a
    write (sys.stdout.buffer.write then returns a short count and drops the rest), so
    every piece is written until done or until the pipe refuses with EPIPE."""
    import os
    sys.stdout.flush()
    view = memoryview(data)
    while view:
        view = view[os.write(sys.stdout.fileno(), view):]


@contextlib.contextmanager
def _log_to_stderr(args: argparse.Namespace) -> Iterator[None]:
    """What the layers below log (the injector's steps, a download's retries) as
    ``configdrive: ...`` lines on stderr: everything with --debug, only warnings with
    --quiet. The command owns its stderr; the libraries only log."""
    import logging
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    loggers = [logging.getLogger(name) for name in ("configdrive", "partition")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM treated like Ctrl-C, so that an injection's teardown and a failed deploy's
    wipe still run."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _say(args: argparse.Namespace, line: str) -> None:
    if not getattr(args, "quiet", False):
        print(line, file=sys.stderr)


# -- the parser --------------------------------------------------------------------

def make_parser() -> argparse.ArgumentParser:
    def global_options(p: argparse.ArgumentParser, default) -> None:
        # Accepted before and after the command name; after it the default is SUPPRESS
        # so that a subcommand does not overwrite a value given before the name.
        p.add_argument("--debug", action="store_true", default=default, help="show a traceback on errors")
        p.add_argument("-q", "--quiet", action="store_true", default=default,
                       help="print nothing but results and errors")

    parser = argparse.ArgumentParser(
        prog=PROG, description="Build, read and deploy OpenStack config-drive-v2 images.")
    global_options(parser, False)
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str,
                examples: str) -> argparse.ArgumentParser:
        # Raw: the examples are command lines, printed as written.
        p = sub.add_parser(name, help=help, description=help, epilog="examples:\n" + examples,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        global_options(p, argparse.SUPPRESS)
        p.set_defaults(handler=handler)
        return p

    p = command("build", cmd_build, "build a config drive image",
                "  configdrive build -o drive.iso --hostname node-7 --ssh-key ~/.ssh/id_ed25519.pub \\\n"
                "      --user-data user-data.yaml\n"
                "  configdrive build --from /dev/sda --network-data new-network.json -o patched.iso\n")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="image file, or - for stdout")
    p.add_argument("--from", dest="source_drive", metavar="DRIVE_OR_DISK",
                   help="re-master this drive (image, directory, or a disk's config partition): "
                        "keep its files, replace only what the content options name")
    add_content_options(p)
    add_format_options(p, sector_size=True, nocloud=True)

    p = command("inspect", cmd_inspect, "show what a drive, a drive directory or a disk's config partition holds",
                "  configdrive inspect drive.iso\n"
                "  configdrive inspect --json /dev/sda\n")
    p.add_argument("drive", metavar="DRIVE_OR_DISK")
    p.add_argument("--json", action="store_true", help="machine-readable output (stable keys)")

    p = command("extract", cmd_extract, "copy a drive's files into a directory",
                "  configdrive extract drive.iso drive-files/\n")
    p.add_argument("drive", metavar="DRIVE_OR_DISK")
    p.add_argument("dir", metavar="DIR")

    p = command("validate", cmd_validate, "check metadata files, a drive or a drive directory",
                "  configdrive validate meta_data.json network_data.json\n"
                "  configdrive validate --strict drive.iso\n")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--kind", choices=("meta_data", "network_data", "vendor_data", "vendor_data2",
                                      "ec2_meta_data", "ironic", "user_data", "drive"),
                   help="what the files are (default: by file name; directories and images are drives)")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")

    p = command("pack", cmd_pack, "print a drive as gzip+base64 (the ironic API form)",
                "  configdrive pack drive.iso > configdrive.txt\n")
    p.add_argument("drive", metavar="DRIVE")

    p = command("unpack", cmd_unpack, "turn a gzip+base64 string back into a drive image",
                "  configdrive unpack configdrive.txt -o drive.iso\n")
    p.add_argument("text_file", metavar="TEXT_FILE")
    p.add_argument("-o", "--output", required=True, metavar="OUT")

    p = command("deploy", cmd_deploy, "write an OS image and/or a config drive onto a disk",
                "  configdrive deploy --device /dev/sda --image https://example.org/cloud.qcow2 \\\n"
                "      --checksum sha256:9f86d0... --hostname node-7 --ssh-key ops.pub\n"
                "  configdrive deploy --device /dev/sda --config-drive drive.iso\n")
    p.add_argument("--device", required=True, metavar="DEV", help="target block device or disk image file")
    p.add_argument("--image", metavar="IMAGE", help="OS image: file, - for stdin, or http(s) URL")
    p.add_argument("--checksum", metavar="ALGO:HEX|FILE|URL", help="expected image checksum")
    p.add_argument("--image-format", choices=("auto", "raw", "qcow2"), default="auto",
                   help="auto: told by content, other containers refused (default); raw: write "
                        "the (decompressed) bytes as they are")
    p.add_argument("--create", action="store_true",
                   help="DEV may be a new disk image file (made with the image's size)")
    p.add_argument("--http-deadline", type=_seconds, metavar="SECONDS",
                   help="overall time for an http(s) download, retries included "
                        "(default 7200, or $CONFIGDRIVE_HTTP_DEADLINE)")
    p.add_argument("--http-retries", type=_count, metavar="N",
                   help="retries for the whole download (default 5, or $CONFIGDRIVE_HTTP_RETRIES)")
    p.add_argument("--config-drive", metavar="DRIVE",
                   help="a ready drive: image file, packed gzip+base64 file, or http(s) URL")
    p.add_argument("--config-size", type=_drive_size, default=64 << 20, metavar="BYTES",
                   help="size of a config partition we create (default 64M)")
    p.add_argument("--mbr-type", type=_mbr_type, default=0x99, metavar="ID",
                   help="MBR partition type that marks the config partition (default 0x99)")
    p.add_argument("--preserve-on-error", action="store_true",
                   help="keep a failed target as it is instead of wiping its partition table")
    p.add_argument("--verify", action="store_true",
                   help="read the written image back from the disk and compare (catches bad writes)")
    p.add_argument("--json", action="store_true", help="print a summary as JSON")
    add_content_options(p)
    add_format_options(p)

    p = command("boot", cmd_boot, "boot a cloud image under QEMU with a drive, print cloud-init's verdict",
                "  configdrive boot debian-12-genericcloud-amd64.qcow2 --hostname node-7 --ssh-key ops.pub\n"
                "  configdrive boot cloud.qcow2 --drive drive.img --attach disk --json\n"
                "  configdrive boot cloud.raw --attach config-partition --uefi --sector-size 4096 \\\n"
                "      --network-data network_data.json\n")
    p.add_argument("image", metavar="IMAGE", help="the cloud image (qcow2 or raw), never modified")
    p.add_argument("--drive", metavar="DRIVE", help="a ready drive image (instead of drive content options)")
    p.add_argument("--attach", choices=("cdrom", "disk", "config-partition", "nocloud", "none"),
                   default="cdrom",
                   help="cdrom: nova's IDE CD-ROM (default); disk: nova's vfat disk; config-partition: "
                        "the image deployed onto a scratch disk, the drive in its config partition "
                        "(ironic); nocloud: a NoCloud seed; none: the image as it is")
    p.add_argument("--uefi", action="store_true", help="boot through UEFI firmware (Debian's OVMF)")
    p.add_argument("--sector-size", type=int, choices=(512, 4096), default=512, metavar="BYTES",
                   help="the disks' logical sector size: 512 (default) or 4096 (4Kn; a vfat drive "
                        "gets 4096-byte sectors too)")
    p.add_argument("--timeout", type=_seconds, default=600, metavar="SECONDS",
                   help="give up when cloud-init has not finished and the guest stopped by then (default 600)")
    p.add_argument("--wait", choices=("cloud-init", "poweroff"), default="cloud-init",
                   help="cloud-init: until its final message, then power the guest off (default); "
                        "poweroff: until the guest powers off by itself (images without cloud-init)")
    p.add_argument("--kernel", metavar="F", help="direct kernel boot: the guest's kernel (IMAGE is its root disk)")
    p.add_argument("--initrd", metavar="F", help="direct kernel boot: its initramfs")
    p.add_argument("--append", metavar="CMDLINE", help="direct kernel boot: the kernel command line "
                                                       "(console=ttyS0 for the verdict)")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                   help="auto: KVM when /dev/kvm is usable, else TCG (software)")
    p.add_argument("--memory", type=_guest_memory, default=1024, metavar="SIZE",
                   help="guest memory, e.g. 2G (default 1G)")
    p.add_argument("--workdir", metavar="DIR",
                   help="where the overlay, console log and verdict go (default: a new temporary directory)")
    p.add_argument("--keep-disks", action="store_true",
                   help="keep the overlay and the raw copy read after the boot (default: removed)")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    add_content_options(p)
    add_format_options(p, nocloud=True)

    p = command("inject", cmd_inject, "write drive content into a guest image's filesystem (legacy)",
                "  configdrive inject guest.raw --hostname node-7 --ssh-key ops.pub\n")
    p.add_argument("image", metavar="IMAGE",
                   help="a raw or qcow2 guest image (other containers are refused: their "
                        "headers can name host files)")
    p.add_argument("--handlers", default=None, metavar="LIST",
                   help="handlers to try in order (default: debugfs,loop,nbd,guestfs)")
    p.add_argument("--partition", default="auto", metavar="N|auto|none",
                   help="partition holding the root filesystem (default auto)")
    p.add_argument("--json", action="store_true", help="print what was injected as JSON")
    add_content_options(p)
    return parser


class _VersionAction(argparse.Action):
    """--version, with the version read only when asked (the package metadata is not
    read for every command)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from .version import version
        print(f"{PROG} {version()}")
        parser.exit()


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    from partition.errors import PartitionError
    from .errors import ConfigDriveError, one_line
    try:
        status = args.handler(args)
        sys.stdout.flush()      # here, not at exit, where a closed pipe could not be handled
        return status
    except OSError as exc:
        if _stdout_closed():
            _die_of_sigpipe()
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{PROG}: error: {one_line(where + str(exc.strerror or exc))}", file=sys.stderr)
        return 1
    except (ConfigDriveError, PartitionError) as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return 130


def _stdout_closed() -> bool:
    """Whether the reader of our stdout has gone (``configdrive inspect X | head -1``):
    poll reports POLLERR on the write end of a pipe, or a socket, without a reader."""
    import select
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def _die_of_sigpipe() -> None:
    """End as cat and every Unix tool ends when its reader goes: killed by SIGPIPE (status
    141 in a shell), without a message. Python ignores SIGPIPE so that a write raises
    BrokenPipeError instead; the default action is restored only here, at the end, so a
    pipe to a helper tool or a socket closing mid-deploy is still an error we handle."""
    import os
    import signal
    sys.stdout = None   # nothing may flush the dead stream on the way out
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
