"""The one exception type the metadata side raises for refused or failed work.

Its message is a single line that names the file, the field (as a JSON pointer) or the
byte offset; the command prints it as ``configdrive: error: MESSAGE`` and exits 1.
"""


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on (newline, escape, NUL, other
    controls) written as a Python escape: a name read from a drive must not forge lines
    or terminal sequences in what we print."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


class ConfigDriveError(Exception):
    """Bad input or a failed step; ``str()`` is the one line a user sees (control
    characters escaped, whatever the message was built from)."""

    def __init__(self, message: str = "", *args):
        super().__init__(printable(str(message)), *args)
