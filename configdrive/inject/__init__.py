"""The legacy injector: write a config drive's content (ssh keys, network, metadata,
admin password, files) straight into a guest image's filesystem, for images that read
nothing but their own files.

Handlers (debugfs, loop, nbd, guestfs, and third-party ones from the
``configdrive.inject.handlers`` entry-point group) are tried in order; the first that can
serve attaches the guest's root, the steps run, and the handler always detaches.
"""

from __future__ import annotations

import logging
from typing import Any

from ..model.content import Content
from ..errors import ConfigDriveError
from .handler import DEFAULT_ORDER, ENTRY_POINT_GROUP, Handler, load, parse_order
from .guestroot import GuestRoot, GuestStat
from .steps import InjectionError, plan, run_steps
from .target import Target

__all__ = ["inject", "Handler", "GuestRoot", "GuestStat", "InjectionError",
           "DEFAULT_ORDER", "ENTRY_POINT_GROUP", "NoHandlerError"]

log = logging.getLogger("configdrive.inject")


class NoHandlerError(ConfigDriveError):
    """No handler could serve the image; the message lists every handler's reason."""


def inject(image: str, content: Content, handlers: str | list[str] | None = None,
           partition: str | int = "auto") -> dict[str, Any]:
    """Inject ``content`` into the guest filesystem of ``image``.

    Returns what was done: ``{"image", "format", "handler", "partition", "filesystem",
    "injected": [...], "warnings": [...], "skipped": [{"handler", "reason"}]}``.
    Raises :class:`NoHandlerError` when no handler can serve (every reason listed) and
    :class:`InjectionError` when a mandatory step (files) fails.
    """
    order = parse_order(handlers)
    target = Target.open(image, partition)
    try:
        plan(content)   # refuse bad guest paths before anything is attached
        return _inject(target, content, order)
    finally:
        target.close()


def _inject(target: Target, content: Content, order: list[str]) -> dict[str, Any]:
    image = target.path
    skipped: list[dict[str, str]] = []
    for name in order:
        handler = load(name)()
        reason = handler.unusable(target)
        if reason is None:
            try:
                root = handler.attach(target)
            except ConfigDriveError as exc:
                # Like nova: a handler that cannot mount this image hands over to the next.
                _detach_after_failure(handler)
                reason = f"could not attach: {exc}"
            except BaseException:      # Ctrl-C half-way through attaching, too
                _detach_after_failure(handler)
                raise
            else:
                try:
                    injected, warnings = run_steps(root, content, image)
                except BaseException:
                    _detach_after_failure(handler)
                    raise
                handler.detach()
                return {
                    "image": image, "format": target.format, "handler": name,
                    "partition": handler.slice.number if handler.slice else None,
                    "filesystem": handler.slice.fs_type if handler.slice else "",
                    "injected": injected, "warnings": warnings, "skipped": skipped,
                }
        log.info("handler %s cannot serve %s: %s", name, image, reason)
        skipped.append({"handler": name, "reason": reason})
    reasons = "; ".join(f"{s['handler']}: {s['reason']}" for s in skipped)
    raise NoHandlerError(f"{image}: no handler can inject into this image ({reasons})")


def _detach_after_failure(handler: Handler) -> None:
    """Detach while an error is on its way up: a failing undo is reported, but must not
    hide the error that caused it."""
    try:
        handler.detach()
    except Exception as exc:
        log.warning("handler %s: teardown failed: %s", handler.name, exc)
