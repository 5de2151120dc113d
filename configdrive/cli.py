"""The ``configdrive`` command: parsing arguments and printing results, nothing else.

Exit status: 0 on success, 2 for a command line that cannot be parsed, 1 for anything
refused or failed, with one line ``configdrive: error: WHAT`` on stderr (``--debug``
shows the traceback). Heavy modules are imported inside the handlers so that ``--help``
stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

PROG = "configdrive"


# -- options shared by the commands that take drive content -------------------------

def add_content_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("drive content (as for build)")
    g.add_argument("--meta-data", metavar="F", help="meta_data.json (OpenStack)")
    g.add_argument("--user-data", metavar="F", help="user data: any bytes (cloud-config, script, MIME, gzip)")
    g.add_argument("--network-data", metavar="F", help="network_data.json")
    g.add_argument("--vendor-data", metavar="F", help="vendor_data.json")
    g.add_argument("--vendor-data2", metavar="F", help="vendor_data2.json")
    g.add_argument("--ironic", metavar="F", help="the ironic API's configdrive object (JSON)")
    g.add_argument("--ec2-meta-data", metavar="F",
                   help="ec2 meta-data.json keys to write as given (instance-id, instance-type, ami-id, "
                        "public-ipv4, reservation-id, security-groups, ...)")
    g.add_argument("--file", metavar="GUEST_PATH=LOCAL", action="append", default=[],
                   help="inject a file (openstack/content/NNNN and a meta_data files entry); repeatable")
    g.add_argument("--uuid", help="meta_data uuid (cloud-init's instance-id)")
    g.add_argument("--hostname", help="meta_data hostname")
    g.add_argument("--name", help="meta_data name")
    g.add_argument("--ssh-key", metavar="F", action="append", default=[],
                   help="OpenSSH public key file (one key a line); repeatable")
    g.add_argument("--admin-pass", metavar="PASSWORD", help="meta_data admin_pass")
    g.add_argument("--random-seed", action="store_true", help="add meta_data random_seed (512 random bytes)")
    g.add_argument("--example", action="store_true",
                   help="start from the built-in example instance (other options override it)")


def add_format_options(p: argparse.ArgumentParser, sector_size: bool = False) -> None:
    g = p.add_argument_group("drive format")
    g.add_argument("--format", choices=("iso", "vfat"), default=None, help="filesystem (default iso)")
    g.add_argument("--label", default="config-2", help="volume label (default config-2)")
    g.add_argument("--size", type=_size, metavar="BYTES",
                   help="vfat image size, e.g. 64M (default 64 MiB)")
    if sector_size:   # deploy takes the sector size from the target disk
        g.add_argument("--sector-size", type=int, choices=(512, 1024, 2048, 4096), metavar="BYTES",
                       help="vfat logical sector size: 512 (default), 1024, 2048 or 4096; "
                            "a drive for a 4096-byte-sector (4Kn) disk needs 4096")
    g.add_argument("--versions", metavar="LIST",
                   help="OpenStack version directories to write, e.g. 2012-08-10,latest (default all)")
    g.add_argument("--no-ec2", dest="ec2", action="store_false", help="leave out the ec2/ tree")
    g.add_argument("--no-validate", dest="validate", action="store_false", help="skip validation")
    g.add_argument("--strict", action="store_true", help="treat validation warnings as errors")


def has_content_options(args: argparse.Namespace) -> bool:
    return bool(args.example or args.meta_data or args.user_data or args.network_data
                or args.vendor_data or args.vendor_data2 or args.ironic or args.ec2_meta_data or args.file
                or args.uuid or args.hostname or args.name or args.ssh_key or args.admin_pass)


def content_from_args(args: argparse.Namespace):
    from .content import content_from_files
    from .examples import example_paths
    ex = example_paths() if args.example else {}
    return content_from_files(
        ironic=args.ironic,
        meta_data=args.meta_data or ex.get("meta_data"),
        user_data=args.user_data or ex.get("user_data"),
        network_data=args.network_data or ex.get("network_data"),
        vendor_data=args.vendor_data or ex.get("vendor_data"),
        vendor_data2=args.vendor_data2 or ex.get("vendor_data2"), ec2=args.ec2_meta_data,
        files=args.file,
        ssh_keys=args.ssh_key or ex.get("ssh_keys", []),
        uuid=args.uuid, name=args.name, hostname=args.hostname,
        admin_pass=args.admin_pass, random_seed=args.random_seed,
    )


def _size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in units else ""
    try:
        return int(float(t[: len(t) - len(unit)]) * units[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (say 64M, 1G or a byte count)") from None


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


# -- handlers ----------------------------------------------------------------------

def cmd_build(args: argparse.Namespace) -> int:
    from .drive import write_drive
    from .errors import ConfigDriveError
    tree, problems = _remastered(args) if args.source_drive else _built(args)
    if args.sector_size and args.format != "vfat":
        raise ConfigDriveError("--sector-size applies to --format vfat only (ISO 9660 has 2048-byte blocks)")
    _report_validation(problems, args.strict)
    to_stdout = args.output == "-"
    write_drive(tree, sys.stdout.buffer if to_stdout else args.output, format=args.format or "iso",
                label=args.label, size=args.size, sector_size=args.sector_size)
    if to_stdout:
        sys.stdout.buffer.flush()
    else:
        import os
        _say(args, f"wrote {args.output}: {args.format or 'iso'}, {os.path.getsize(args.output)} bytes, "
                   f"label {args.label}")
    return 0


def _built(args: argparse.Namespace):
    """The tree of a new drive from the content options, and what validation says of it."""
    from .layout import build_tree
    from .validate import validate_build
    content = content_from_args(args)
    tree = build_tree(content, versions=args.versions, ec2=args.ec2)
    problems = validate_build(content, tree, label=args.label, versions=args.versions, ec2=args.ec2,
                              source=args.output) if args.validate else []
    return tree, problems


def _remastered(args: argparse.Namespace):
    """``--from``: the drive's tree with what the options name replaced, and what
    validation says of the result."""
    from .drive import Drive, open_drive
    from .errors import ConfigDriveError
    from .remaster import changes_from_options, remaster
    from .validate import validate_drive
    for given, option in ((args.example, "--example"), (args.versions, "--versions"), (not args.ec2, "--no-ec2")):
        if given:
            raise ConfigDriveError(f"--from keeps the drive's own layout: {option} cannot be used with it")
    changes = changes_from_options(
        ironic=args.ironic, meta_data=args.meta_data, user_data=args.user_data,
        network_data=args.network_data, vendor_data=args.vendor_data, vendor_data2=args.vendor_data2,
        ec2=args.ec2_meta_data, files=args.file, ssh_keys=args.ssh_key, random_seed=args.random_seed,
        uuid=args.uuid, name=args.name, hostname=args.hostname, admin_pass=args.admin_pass)
    source = open_drive(args.source_drive)
    if args.format is None:   # a re-master keeps the drive's filesystem unless told otherwise
        args.format = "vfat" if source.format == "vfat" else "iso"
    tree = remaster(source.tree, changes, args.source_drive)
    problems = validate_drive(Drive(args.source_drive, "built", args.label, tree)) if args.validate else []
    return tree, problems


def _report_validation(problems, strict: bool) -> None:
    """Warnings are printed; errors (and, with --strict, warnings) stop the build with
    every problem listed."""
    from .errors import ConfigDriveError
    errors = [p for p in problems if p.severity == "error" or strict]
    for p in problems:
        if p not in errors:
            print(f"{PROG}: warning: {p}", file=sys.stderr)
    if errors:
        for p in errors[:-1]:
            print(f"{PROG}: error: {p}", file=sys.stderr)
        raise ConfigDriveError(str(errors[-1]))


def cmd_inspect(args: argparse.Namespace) -> int:
    from .drive import open_drive
    summary = open_drive(args.drive).summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    part = summary["partition"]
    print(f"source:    {summary['source']}")
    if part:
        print(f"partition: #{part.get('number')} at byte {part.get('start')} "
              f"({part.get('size')} bytes), found by {part.get('identity')}")
    print(f"format:    {summary['format']}")
    print(f"label:     {summary['label']}")
    print(f"versions:  {', '.join(summary['versions']) or '-'}")
    print(f"ec2:       {', '.join(summary['ec2_versions']) or '-'}")
    print(f"uuid:      {summary['uuid']}")
    print(f"hostname:  {summary['hostname']}")
    print(f"keys:      {', '.join(summary['public_keys']) or '-'}")
    print(f"network:   {summary['links']} links, {summary['networks']} networks, {summary['services']} services")
    print(f"files:     {len(summary['files'])}")
    for f in summary["files"]:
        print(f"  {f['size']:>10}  {f['path']}")
    for note in summary["notes"]:
        print(f"note: {note}")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from .drive import extract, open_drive
    drive = open_drive(args.drive)
    extract(drive.tree, args.dir)
    _say(args, f"extracted {len(drive.tree)} files from {args.drive} ({drive.format}) to {args.dir}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .validate import validate_paths
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
    from .content import read_bytes
    from .pack import pack
    print(pack(read_bytes(args.drive, "drive")))
    return 0


def cmd_unpack(args: argparse.Namespace) -> int:
    from .content import read_bytes
    from .pack import unpack
    image = unpack(read_bytes(args.text_file, "packed drive"), source=args.text_file)
    if args.output == "-":
        sys.stdout.buffer.write(image)
    else:
        from pathlib import Path
        from .drive import atomic_output
        with atomic_output(Path(args.output)) as fp:
            fp.write(image)
        _say(args, f"wrote {args.output}: {len(image)} bytes")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from .deploy import deploy
    # The drive: a ready one (--config-drive), or content options built like `build` does.
    drive = args.config_drive or (content_from_args(args) if has_content_options(args) else None)
    http = {k: v for k, v in (("deadline", args.http_deadline), ("retries", args.http_retries))
            if v is not None}
    summary = deploy(args.device, args.image, checksum=args.checksum, drive=drive,
                     preserve_on_error=args.preserve_on_error, verify=args.verify, quiet=args.quiet,
                     create=args.create, image_format=args.image_format, http_options=http,
                     config_size=args.config_size, mbr_type=args.mbr_type, format=args.format,
                     label=args.label, size=args.size, versions=args.versions, ec2=args.ec2,
                     validate=args.validate)
    if args.json:
        print(json.dumps(summary, indent=2))
    if summary["image"]:
        s = summary["image"]
        _say(args, f"{PROG}: wrote {s['source']} ({s['format']}"
                   f"{', a hybrid ISO' if s['detected'] == 'iso-hybrid' else ''}"
                   f"{', ' + s['compression'] if s['compression'] else ''}) to {args.device}: "
                   f"{s['virtual_size']} bytes in {s['seconds']:.1f}s"
                   f"{', ' + s['checksum']['algorithm'] + ' verified' if s['checksum'] else ''}"
                   f"{', read back and verified' if s['verified'] else ''}")
    if summary["config_drive"]:
        c, p = summary["config_drive"], summary["config_drive"]["partition"]
        _say(args, f"{PROG}: wrote the {c['drive']['format']} drive labelled {c['drive']['label']} to "
                   f"partition {p['number']} ({'created, ' if p['created'] else ''}found by {p['identity']}) "
                   f"at byte {p['start']} of {args.device}{', node ' + p['node'] if p['node'] else ''}")
        for note in c["notes"]:
            _say(args, f"{PROG}: note: {note}")
    return 0


def cmd_inject(args: argparse.Namespace) -> int:
    from .inject import inject_from_args
    result = inject_from_args(args, content_from_args(args))
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        global_options(p, argparse.SUPPRESS)
        p.set_defaults(handler=handler)
        return p

    p = command("build", cmd_build, "build a config drive image")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="image file, or - for stdout")
    p.add_argument("--from", dest="source_drive", metavar="DRIVE_OR_DISK",
                   help="re-master this drive (image, directory, or a disk's config partition): "
                        "keep its files, replace only what the content options name")
    add_content_options(p)
    add_format_options(p, sector_size=True)

    p = command("inspect", cmd_inspect, "show what a drive, a drive directory or a disk's config partition holds")
    p.add_argument("drive", metavar="DRIVE_OR_DISK")
    p.add_argument("--json", action="store_true", help="machine-readable output (stable keys)")

    p = command("extract", cmd_extract, "copy a drive's files into a directory")
    p.add_argument("drive", metavar="DRIVE_OR_DISK")
    p.add_argument("dir", metavar="DIR")

    p = command("validate", cmd_validate, "check metadata files, a drive or a drive directory")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--kind", choices=("meta_data", "network_data", "vendor_data", "vendor_data2",
                                      "ec2_meta_data", "ironic", "user_data", "drive"),
                   help="what the files are (default: by file name; directories and images are drives)")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")

    p = command("pack", cmd_pack, "print a drive as gzip+base64 (the ironic API form)")
    p.add_argument("drive", metavar="DRIVE")

    p = command("unpack", cmd_unpack, "turn a gzip+base64 string back into a drive image")
    p.add_argument("text_file", metavar="TEXT_FILE")
    p.add_argument("-o", "--output", required=True, metavar="OUT")

    p = command("deploy", cmd_deploy, "write an OS image and/or a config drive onto a disk")
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
    p.add_argument("--config-size", type=_size, default=64 << 20, metavar="BYTES",
                   help="size of a config partition we create (default 64M)")
    p.add_argument("--mbr-type", type=lambda s: int(s, 0), default=0x99, metavar="ID",
                   help="MBR partition type that marks the config partition (default 0x99)")
    p.add_argument("--preserve-on-error", action="store_true",
                   help="keep a failed target as it is instead of wiping its partition table")
    p.add_argument("--verify", action="store_true",
                   help="read the written image back from the disk and compare (catches bad writes)")
    p.add_argument("--json", action="store_true", help="print a summary as JSON")
    add_content_options(p)
    add_format_options(p)

    p = command("inject", cmd_inject, "write drive content into a guest image's filesystem (legacy)")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--handlers", default=None, metavar="LIST",
                   help="handlers to try in order (default: debugfs,loop,nbd,guestfs)")
    p.add_argument("--partition", default="auto", metavar="N|auto|none",
                   help="partition holding the root filesystem (default auto)")
    p.add_argument("--json", action="store_true", help="print what was injected as JSON")
    add_content_options(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    from partition.errors import PartitionError
    from .errors import ConfigDriveError
    try:
        return args.handler(args)
    except (ConfigDriveError, PartitionError) as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{PROG}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
