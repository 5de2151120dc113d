"""The handler interface and the registry of handlers (built-in and third-party).

A handler answers three questions: can it serve this image here, and if not why
(:meth:`Handler.unusable`); give me the guest's root for this image
(:meth:`Handler.attach`); give it back (:meth:`Handler.detach`). The injector tries the
configured handlers in order; the first that is usable and attaches wins.

Third parties add handlers through the entry-point group ``configdrive.inject.handlers``::

    [project.entry-points."configdrive.inject.handlers"]
    mytool = "mypackage.inject:MyToolHandler"

The entry point's name is the handler's name in ``--handlers``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from abc import ABC, abstractmethod
from importlib.metadata import entry_points
from typing import ClassVar

from ..errors import ConfigDriveError
from .guestroot import GuestRoot
from .target import Slice, Target

ENTRY_POINT_GROUP = "configdrive.inject.handlers"

# The safest first: debugfs never mounts the guest filesystem and needs no root.
DEFAULT_ORDER = ("debugfs", "loop", "nbd", "guestfs")

_BUILTIN = {
    "debugfs": "configdrive.inject.debugfs:DebugfsHandler",
    "loop": "configdrive.inject.loop:LoopHandler",
    "nbd": "configdrive.inject.nbd:NbdHandler",
    "guestfs": "configdrive.inject.guestfs:GuestfsHandler",
}


class Handler(ABC):
    """One way to reach a guest's filesystem. An instance serves one attach/detach.

    Subclasses register what must be undone in ``self.cleanup`` (an ExitStack) as soon
    as they acquire it; :meth:`detach` unwinds it in reverse, and every undo runs even
    when an earlier one fails. The injector calls detach whatever happens after
    :meth:`attach` was entered (errors, a half-done attach, Ctrl-C)."""

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        self.cleanup = contextlib.ExitStack()
        self.slice: Slice | None = None     # what attach found, for the report

    @abstractmethod
    def unusable(self, target: Target) -> str | None:
        """None when this handler can serve ``target`` on this machine, else the reason
        in a few words (shown to the user when no handler can serve)."""

    @abstractmethod
    def attach(self, target: Target) -> GuestRoot:
        """Make the guest's root filesystem reachable and return it."""

    def detach(self) -> None:
        """Undo everything attach did, in reverse order."""
        self.cleanup.close()


def needs_root() -> str | None:
    return None if os.geteuid() == 0 else "needs root"


def registry() -> dict[str, str | type[Handler]]:
    """Every known handler by name: built-ins, then entry points (which cannot replace a
    built-in, so an installed package cannot silently change what ``loop`` means)."""
    known: dict[str, str | type[Handler]] = dict(_BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        known.setdefault(ep.name, ep.value)
    return known


def load(name: str) -> type[Handler]:
    ref = registry().get(name)
    if ref is None:
        raise ConfigDriveError(f"--handlers: unknown handler {name!r} (known: {', '.join(registry())})")
    if isinstance(ref, str):
        module, _, attr = ref.partition(":")
        try:
            ref = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigDriveError(f"handler {name}: cannot load {module}:{attr} ({exc})") from exc
    if not (isinstance(ref, type) and issubclass(ref, Handler)):
        raise ConfigDriveError(f"handler {name}: {ref!r} is not a configdrive.inject Handler")
    return ref


def parse_order(spec: str | list[str] | tuple[str, ...] | None) -> list[str]:
    if spec is None:
        return list(DEFAULT_ORDER)
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise ConfigDriveError("--handlers: names no handler")
    for name in names:
        if name not in registry():
            raise ConfigDriveError(f"--handlers: unknown handler {name!r} (known: {', '.join(registry())})")
    return names
