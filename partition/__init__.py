"""The block-device side: image sources, the dd-semantics copier, partition tables and
devices. Knows nothing about config drives' content; ``configdrive`` builds on it."""
