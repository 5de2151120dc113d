"""Images out: the target opened by handle, the dd-semantics copy with its safety order,
O_DIRECT writes, the read-back, and the kernel made to see the new table."""
