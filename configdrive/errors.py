"""The one exception type the metadata side raises for refused or failed work.

Its message is a single line that names the file, the field (as a JSON pointer) or the
byte offset; the command prints it as ``configdrive: error: MESSAGE`` and exits 1.
"""


class ConfigDriveError(Exception):
    """Bad input or a failed step; ``str()`` is the one line a user sees."""
