#!/usr/bin/env bash
# Build the Linux guest the end-to-end tests boot under QEMU (tests/e2e/).
#
#   bash scripts/e2e-guest.sh OUTDIR [SUITE]
#
# SUITE is the Debian release: bookworm (default, cloud-init 22.4) or trixie (a newer
# cloud-init); both guests are configured alike and read the same drives.
#
# OUTDIR gets:
#   vmlinuz, initrd.img      the guest's own kernel and initramfs (direct kernel boot)
#   root.ext4                the root filesystem as a raw ext4 image, label e2e-root
#   disk-config.qcow2        GPT disk: partition 1 = root.ext4, partition 2 = an empty
#                            partition named config-v2 (what deploy fills)
#   disk-plain.qcow2         GPT disk: partition 1 = root.ext4 only (deploy must make one)
#
# The guest: Debian SUITE (debootstrap minbase) with cloud-init, the cloud kernel,
# systemd and ifupdown (cloud-init's first network renderer on Debian, "eni"), set to look
# only for a config drive, and to power off once cloud-init's final stage is done. It
# needs root (chroot, mounts), network access to the Debian mirror, and takes ~10 minutes.
# The tests cache OUTDIR under a key made from this file's hash: edit this file and the
# next run rebuilds.
set -euo pipefail

OUT=${1:?usage: e2e-guest.sh OUTDIR [SUITE]}
MIRROR=${E2E_MIRROR:-http://deb.debian.org/debian}
SUITE=${2:-bookworm}
ROOT_MIB=1024          # root filesystem size; the installed guest takes ~500 MiB
CONFIG_MIB=64          # the empty config-v2 partition of disk-config (ironic's size)
ROOT_LABEL=e2e-root
# Fixed identifiers so that two builds from the same packages give the same filesystem
# metadata (debootstrap itself is only as reproducible as the mirror's current state).
ROOT_UUID=6f5c0d1e-2b7a-4c55-9a0e-3d1c2e4f5a6b
HASH_SEED=0b1c2d3e-4f50-4a61-8b72-9c8d7e6f5a4b
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

[ "$(id -u)" = 0 ] || { echo "e2e-guest.sh: needs root (debootstrap, chroot)" >&2; exit 1; }
for tool in debootstrap mkfs.ext4 sgdisk qemu-img; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] \
    || { echo "e2e-guest.sh: $tool is not installed (run scripts/install.sh)" >&2; exit 1; }
done

mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.build.XXXXXX")
ROOTFS=$WORK/rootfs
source "$(dirname "${BASH_SOURCE[0]}")/e2e-chroot.sh"
trap 'unmount_lazily; remove_work' EXIT

step() { echo "e2e-guest.sh: $*" >&2; }

step "debootstrap $SUITE (minbase) from $MIRROR"
debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -n 30 "$WORK/debootstrap.log" >&2; exit 1; }

chroot_enter
# No resume device: without this the initramfs waits ~30 s looking for one at every boot.
mkdir -p "$ROOTFS/etc/initramfs-tools/conf.d"
echo "RESUME=none" >"$ROOTFS/etc/initramfs-tools/conf.d/resume"

# cloud-init goes in with apt inside the chroot: debootstrap's own resolver cannot
# satisfy one of its dependencies (an alternative it does not follow).
step "installing cloud-init, the cloud kernel, systemd, ifupdown"
chroot "$ROOTFS" /usr/bin/env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 \
  apt-get install -y -q --no-install-recommends \
    cloud-init linux-image-cloud-amd64 systemd-sysv udev ifupdown iproute2 \
  >"$WORK/apt.log" 2>&1 || { tail -n 40 "$WORK/apt.log" >&2; exit 1; }

step "configuring the guest"
cat >"$ROOTFS/etc/cloud/cloud.cfg.d/90-e2e.cfg" <<'EOF'
# The end-to-end guest: a config drive, a NoCloud seed or nothing, and no waiting for
# metadata servers.
datasource_list: [ ConfigDrive, NoCloud, None ]
# Root takes the drive's public keys as they are (Debian's default wraps them in a
# "log in as debian" command), so a test reads the key itself in authorized_keys.
disable_root: false
# No SSH host keys: there is no sshd here, and key generation is slow under emulation.
# (An empty ssh_keys skips generation; "ssh_genkeytypes: []" would fail the schema.)
ssh_keys: {}
# The boot's end: power off when cloud-init's final stage is done; QEMU runs with
# -no-reboot, so the test sees QEMU exit.
power_state:
  mode: poweroff
  delay: now
  message: e2e guest powering off
  timeout: 60
  condition: true
EOF

# Without a drive (the legacy injection scenario boots none) cloud-init still runs, on
# DataSource None, so that the guest reports and powers off instead of hanging; and a
# missing drive shows as "datasource=DataSourceNone" at once rather than as a timeout.
echo "policy: search,found=all,maybe=all,notfound=enabled" >"$ROOTFS/etc/cloud/ds-identify.cfg"

# Markers on the serial console for the test to parse: "E2E key=value" lines, printed by
# cloud-init's final stage (per-boot scripts run before power_state_change).
install -d "$ROOTFS/var/lib/cloud/scripts/per-boot"
cat >"$ROOTFS/var/lib/cloud/scripts/per-boot/90-e2e-report" <<'EOF'
#!/bin/sh
# What cloud-init made of the config drive, for the end-to-end test on the serial console.
{
  echo "E2E hostname=$(hostname)"
  echo "E2E cloud-init-version=$(cloud-init --version 2>&1)"
  python3 -c 'import json; print("E2E datasource=" + json.load(open("/run/cloud-init/status.json"))["v1"]["datasource"])' \
    || echo "E2E datasource=unknown"
  echo "E2E subplatform=$(cloud-init query subplatform 2>/dev/null)"
  ip -o -4 addr show scope global | while read -r _ ifname _ addr _; do echo "E2E address=$ifname $addr"; done
  [ -f /root/.ssh/authorized_keys ] && sed 's/^/E2E root-key=/' /root/.ssh/authorized_keys
  # Files a test injected into the image before boot (configdrive inject --file).
  for f in /etc/configdrive-e2e/*; do [ -f "$f" ] && echo "E2E file=$f $(head -n 1 "$f")"; done
  echo "E2E report-done"
} >/dev/console 2>&1
EOF
chmod 755 "$ROOTFS/var/lib/cloud/scripts/per-boot/90-e2e-report"

echo "LABEL=$ROOT_LABEL / ext4 defaults 0 0" >"$ROOTFS/etc/fstab"
echo "e2e-unconfigured" >"$ROOTFS/etc/hostname"
printf '127.0.0.1 localhost\n' >"$ROOTFS/etc/hosts"
# Nothing that is not needed for the test runs at boot (each second counts under TCG); and
# no login prompt on the serial console, where trixie's getty would cut into report lines.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
            fstrim.timer dpkg-db-backup.timer systemd-tmpfiles-clean.timer getty@tty1.service \
            serial-getty@ttyS0.service; do
  chroot "$ROOTFS" systemctl mask "$unit" >/dev/null 2>&1 || true
done
# A fixed machine id: an empty one makes systemd treat the boot as a first boot and
# apply presets, which would re-enable what we masked and cost time.
[ -s "$ROOTFS/etc/machine-id" ] || chroot "$ROOTFS" systemd-machine-id-setup >/dev/null

# The initramfs must hold what finds the root disk: virtio_blk (a module in this kernel).
kver=$(basename "$(ls -d "$ROOTFS"/lib/modules/* | head -n 1)")
initrd=$ROOTFS/boot/initrd.img-$kver
initrd_files=$(chroot "$ROOTFS" lsinitramfs "/boot/initrd.img-$kver")
if ! grep -q '/virtio_blk\.ko' <<<"$initrd_files" \
   && ! grep -q '/virtio_blk\.ko' "$ROOTFS/lib/modules/$kver/modules.builtin"; then
  echo "e2e-guest.sh: $initrd has no virtio_blk driver" >&2; exit 1
fi
cp "$ROOTFS/boot/vmlinuz-$kver" "$WORK/vmlinuz"
cp "$initrd" "$WORK/initrd.img"

chroot "$ROOTFS" apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/*.log "$ROOTFS"/var/cache/debconf/*-old
chroot_leave

step "making root.ext4 and the GPT disks"
# 4096-byte blocks, written out: ext4 cannot be mounted from a disk whose logical sectors
# are larger than its blocks, and the 4Kn boot uses this same filesystem.
mkfs.ext4 -q -F -b 4096 -L "$ROOT_LABEL" -U "$ROOT_UUID" -E "hash_seed=$HASH_SEED" \
  -d "$ROOTFS" "$WORK/root.ext4" "${ROOT_MIB}M" >/dev/null

# A GPT disk holding root.ext4 as partition 1 (and optionally an empty config-v2).
make_disk() {  # make_disk OUT.qcow2 CONFIG_MIB(0 = none)
  local raw=$WORK/disk.raw config_mib=$2
  rm -f "$raw"
  truncate -s $(( (1 + ROOT_MIB + config_mib + 1) * 1024 * 1024 )) "$raw"
  sgdisk -o -n "1:1M:+${ROOT_MIB}M" -t 1:8300 -c 1:root "$raw" >/dev/null
  if ((config_mib)); then
    sgdisk -n "2:0:+${config_mib}M" -t 2:0700 -c 2:config-v2 "$raw" >/dev/null
  fi
  sgdisk -v "$raw" >/dev/null
  dd if="$WORK/root.ext4" of="$raw" bs=1M seek=1 conv=notrunc,sparse status=none
  qemu-img convert -q -f raw -O qcow2 "$raw" "$1"
  rm -f "$raw"
}
make_disk "$WORK/disk-config.qcow2" "$CONFIG_MIB"
make_disk "$WORK/disk-plain.qcow2" 0

rm -rf "$ROOTFS"
mv "$WORK"/{vmlinuz,initrd.img,root.ext4,disk-config.qcow2,disk-plain.qcow2} "$OUT"/
step "done: $OUT"
