"""SHA-512 crypt (``$6$``) hashes for etc/shadow, made by OpenSSL's ``passwd -6``.

Python's crypt module is deprecated and gone in 3.13; glibc, OpenSSL and every distro's
login accept this scheme, so we ask Debian's openssl rather than re-implementing it.
"""

from __future__ import annotations

from ..errors import ConfigDriveError
from .tools import run_tool, which


def sha512_crypt(password: str, salt: str | None = None) -> str:
    """``$6$salt$hash``; a random salt unless one is given (tests pin it)."""
    if "\n" in password or "\r" in password:
        # openssl -stdin reads one line: a newline would silently cut the password.
        raise ConfigDriveError("admin_pass: a password with a line break cannot be set in etc/shadow")
    if which("openssl") is None:
        raise ConfigDriveError("admin_pass: openssl is not installed (needed for the SHA-512 crypt hash)")
    salt_args = ["-salt", salt] if salt is not None else []
    out = run_tool("openssl", "passwd", "-6", *salt_args, "-stdin", input=password.encode() + b"\n", quiet=True)
    hashed = out.stdout.decode().strip()
    if not hashed.startswith("$6$"):
        raise ConfigDriveError(f"admin_pass: openssl passwd -6 gave no SHA-512 crypt hash ({hashed[:20]!r})")
    return hashed
