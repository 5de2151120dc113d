"""The version of configdrive as installed: pip's record of pyproject.toml's, so that
``--version``, JSON summaries, the IPA manager's log and our ISO application id all say
what was shipped rather than a second copy of the number."""

from __future__ import annotations


def version() -> str:
    from importlib import metadata    # here: `configdrive --help` must not pay for it
    try:
        return metadata.version("configdrive")
    except metadata.PackageNotFoundError:
        return "0+unknown"    # a checkout on sys.path that pip never installed
