# The chroot plumbing scripts/e2e-guest.sh and scripts/e2e-guest-glean.sh share (sourced,
# not run): the kernel filesystems that package scripts inside a guest root need, a guard
# that no service starts there, and a cleanup that never deletes through a mount still in
# place. The caller sets WORK (its scratch directory) and ROOTFS (the guest root in it).

mounted=()   # what is mounted under WORK, in the order it was mounted

# proc, sys, dev and dev/pts inside ROOTFS; no service may start in the chroot.
chroot_enter() {
  local fs
  for fs in proc sys dev dev/pts; do
    case $fs in
      proc) mount -t proc proc "$ROOTFS/proc" ;;
      sys) mount -t sysfs sysfs "$ROOTFS/sys" ;;
      dev) mount --bind /dev "$ROOTFS/dev" ;;
      dev/pts) mount -t devpts devpts "$ROOTFS/dev/pts" ;;
    esac
    mounted+=("$ROOTFS/$fs")
  done
  printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
  chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
}

# Services allowed again (the booted guest starts them); everything unmounted, and an
# unmount that fails is an error.
chroot_leave() {
  local i
  rm -f "$ROOTFS/usr/sbin/policy-rc.d"
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[i]}"; done
  mounted=()
}

# On the way out after a failure: detach whatever is still mounted.
unmount_lazily() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
  mounted=()
}

# WORK removed, unless something under it is still mounted: never recurse into the
# chroot's /dev or /proc.
remove_work() {
  if grep -q " $WORK/" /proc/mounts; then
    echo "$(basename "$0"): mounts left under $WORK, not removing it" >&2
  else
    rm -rf --one-file-system "$WORK"
  fi
}
