"""OS images in: read from a file, stdin or http(s), decompressed, recognised by their
bytes, and turned into the extents of a virtual disk (raw or qcow2), hashed as they pass."""
