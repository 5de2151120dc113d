"""The one exception type the metadata side raises for refused or failed work, and how any
message becomes the one line a user sees.

Its message is a single line that names the file, the field (as a JSON pointer) or the
byte offset; the command prints it as ``configdrive: error: MESSAGE`` and exits 1.
"""


class ConfigDriveError(Exception):
    """Bad input or a failed step; ``str()`` is the one line a user sees (unprintable
    characters escaped by :func:`one_line`, whatever the message was built from)."""

    def __init__(self, message: str = "", *args):
        super().__init__(one_line(str(message)), *args)


def one_line(text: str) -> str:
    """``text`` with every character that is not printable shown as a JSON-style escape
    (a newline becomes ``\\u000a``). Messages quote names and values from drives, guest
    images and JSON documents, which are a stranger's text: a newline there would forge a
    second line, an escape sequence would drive the terminal, and a right-to-left override
    would reorder what the user reads (CVE-2021-42574, "Trojan Source")."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
