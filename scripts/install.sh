#!/usr/bin/env bash
# Install everything configdrive and its tests need on a fresh Debian machine:
# the Debian tools the tests read our images back with, then a virtualenv (.venv) with
# the package itself installed (non-editable, so tests use what `pip install .` ships).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(
  genisoimage xorriso mtools dosfstools     # isoinfo/genisoimage/xorriso, mcopy, fsck.fat
  gdisk fdisk parted util-linux kpartx      # sgdisk, sfdisk, partx, losetup, blkid
  qemu-utils                                # qemu-img, qemu-io, qemu-nbd
  lshw                                      # ironic-python-agent exits at start-up without it
  cryptsetup-bin                            # LUKS containers deploy must refuse by name
  e2fsprogs                                 # mkfs.ext4 -d, debugfs, e2fsck (injector)
  openssl                                   # openssl passwd -6 (injector: etc/shadow hash)
  zstd xz-utils gzip                        # compressed image fixtures
  cloud-init                                # cloud-init's own config drive reader
  cloud-image-utils                         # cloud-localds: the NoCloud seeds we are compared with
  debootstrap qemu-system-x86               # the end-to-end guest (make e2e): build, boot
  ovmf grub-efi-amd64-bin                   # e2e UEFI boots: firmware, grub-mkstandalone
  python3 python3-venv
)

missing=()
for pkg in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "install.sh: installing Debian packages: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q ".[test]"
bash scripts/peers.sh
