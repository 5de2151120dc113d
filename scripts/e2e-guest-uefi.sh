#!/usr/bin/env bash
# Make whole-disk UEFI images of the end-to-end guest (tests/e2e/), as a bare-metal image
# is shipped: a GPT disk that firmware boots with nothing but the disk.
#
#   bash scripts/e2e-guest-uefi.sh GUESTDIR OUTDIR SECTOR_SIZE
#
# GUESTDIR is what scripts/e2e-guest.sh made (root.ext4 is used); SECTOR_SIZE is 512 or
# 4096: the disks' GPT, EFI system partition and offsets are laid out for that logical
# sector size (built on a loop device with that sector size, so sgdisk lays it out as it
# would on such a disk). OUTDIR gets:
#   uefi-config.qcow2   partition 1 = EFI system partition, 2 = root, 3 = an empty config-v2
#   uefi-plain.qcow2    partitions 1 and 2 only (deploy must make a config partition)
#
# The EFI system partition (vfat, made by mkfs.fat, filled with mtools) holds only
# \EFI\BOOT\BOOTX64.EFI, the removable-media path that firmware boots with no boot entry
# in NVRAM: a standalone GRUB (grub-mkstandalone) whose embedded grub.cfg finds the root
# ext4 by its UUID and boots the guest's own kernel and initramfs from /boot. Needs root
# (losetup) and takes well under a minute.
set -euo pipefail

GUEST=${1:?usage: e2e-guest-uefi.sh GUESTDIR OUTDIR SECTOR_SIZE}
OUT=${2:?usage: e2e-guest-uefi.sh GUESTDIR OUTDIR SECTOR_SIZE}
SECTOR=${3:?usage: e2e-guest-uefi.sh GUESTDIR OUTDIR SECTOR_SIZE}
ESP_MIB=32
ROOT_MIB=1024          # as scripts/e2e-guest.sh makes root.ext4
CONFIG_MIB=64
# The root filesystem's UUID, fixed by scripts/e2e-guest.sh.
ROOT_UUID=6f5c0d1e-2b7a-4c55-9a0e-3d1c2e4f5a6b
KERNEL_ARGS="root=UUID=$ROOT_UUID rw console=ttyS0 net.ifnames=0 panic=1 quiet systemd.show_status=error"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

case $SECTOR in 512|4096) ;; *) echo "e2e-guest-uefi.sh: SECTOR_SIZE must be 512 or 4096" >&2; exit 1 ;; esac
[ "$(id -u)" = 0 ] || { echo "e2e-guest-uefi.sh: needs root (losetup)" >&2; exit 1; }
for tool in grub-mkstandalone mkfs.fat mmd mcopy sgdisk sfdisk losetup debugfs qemu-img; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] \
    || { echo "e2e-guest-uefi.sh: $tool is not installed (run scripts/install.sh)" >&2; exit 1; }
done
[ -f "$GUEST/root.ext4" ] || { echo "e2e-guest-uefi.sh: no $GUEST/root.ext4" >&2; exit 1; }

mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.build.XXXXXX")
loop=""
cleanup() {
  [ -z "$loop" ] || losetup -d "$loop" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
step() { echo "e2e-guest-uefi.sh: $*" >&2; }

# The kernel and initramfs GRUB loads: the guest's own, by the names its /boot has.
boot_files=$(debugfs -R "ls -p /boot" "$GUEST/root.ext4" 2>/dev/null | awk -F/ '{print $6}')
kernel=$(grep -m1 '^vmlinuz-' <<<"$boot_files") \
  || { echo "e2e-guest-uefi.sh: no /boot/vmlinuz-* in $GUEST/root.ext4" >&2; exit 1; }
initrd=initrd.img-${kernel#vmlinuz-}
grep -qx "$initrd" <<<"$boot_files" \
  || { echo "e2e-guest-uefi.sh: no /boot/$initrd in $GUEST/root.ext4" >&2; exit 1; }

step "grub-mkstandalone: BOOTX64.EFI booting /boot/$kernel"
cat >"$WORK/grub.cfg" <<EOF
# Embedded in BOOTX64.EFI: no menu, straight into the guest's kernel.
set timeout=0
insmod part_gpt
insmod ext2
search --no-floppy --fs-uuid --set=root $ROOT_UUID
echo "E2E-GRUB root=\$root"
linux /boot/$kernel $KERNEL_ARGS
initrd /boot/$initrd
boot
EOF
grub-mkstandalone --format=x86_64-efi --output="$WORK/BOOTX64.EFI" \
  --modules="part_gpt ext2 search_fs_uuid linux echo" --locales= --fonts= --themes= \
  "boot/grub/grub.cfg=$WORK/grub.cfg"

step "EFI system partition: vfat with ${SECTOR}-byte sectors, filled with mtools"
mkfs.fat -C -S "$SECTOR" -n ESP -i 0e2e0e2e "$WORK/esp.img" $((ESP_MIB * 1024)) >/dev/null
mmd -i "$WORK/esp.img" ::/EFI ::/EFI/BOOT
mcopy -i "$WORK/esp.img" "$WORK/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
fsck.fat -n "$WORK/esp.img" >/dev/null

# A GPT disk: ESP, root, and (CONFIG_MIB > 0) an empty partition named config-v2.
make_disk() {  # make_disk OUT.qcow2 CONFIG_MIB
  local raw=$WORK/disk.raw config_mib=$2 layout starts
  rm -f "$raw"
  truncate -s $(( (1 + ESP_MIB + ROOT_MIB + config_mib + 1) * 1024 * 1024 )) "$raw"
  loop=$(losetup --show -f --sector-size "$SECTOR" "$raw")
  layout=(-o -n "1:1M:+${ESP_MIB}M" -t 1:ef00 -c 1:esp -n "2:0:+${ROOT_MIB}M" -t 2:8300 -c 2:root)
  ((config_mib)) && layout+=(-n "3:0:+${config_mib}M" -t 3:0700 -c 3:config-v2)
  sgdisk "${layout[@]}" "$loop" >/dev/null
  sgdisk -v "$loop" >/dev/null
  # Start sectors in the loop device's (the disk's) sector size.
  starts=($(sfdisk --json "$loop" | python3 -c \
    'import json,sys; print(*(p["start"] for p in json.load(sys.stdin)["partitiontable"]["partitions"]))'))
  losetup -d "$loop"; loop=""
  dd if="$WORK/esp.img" of="$raw" bs="$SECTOR" seek="${starts[0]}" conv=notrunc status=none
  dd if="$GUEST/root.ext4" of="$raw" bs="$SECTOR" seek="${starts[1]}" conv=notrunc,sparse status=none
  qemu-img convert -q -f raw -O qcow2 "$raw" "$1"
  rm -f "$raw"
}
step "GPT disks for ${SECTOR}-byte sectors"
make_disk "$WORK/uefi-config.qcow2" "$CONFIG_MIB"
make_disk "$WORK/uefi-plain.qcow2" 0
mv "$WORK"/uefi-{config,plain}.qcow2 "$OUT"/
step "done: $OUT"
