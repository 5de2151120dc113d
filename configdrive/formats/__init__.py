"""Drive formats, each writer beside its reader: ISO 9660 (Joliet, Rock Ridge), FAT, and the
gzip+base64 packing of ironic's API."""
