"""The one exception type the block-device side raises.

``partition`` knows nothing about metadata and never imports ``configdrive``, so it has
its own base class; the command catches both. Messages are single lines that name the
device or file, the byte offset or the table field that was wrong.
"""


class PartitionError(Exception):
    """A refused or failed block-device operation; ``str()`` is the line a user sees."""
