#!/usr/bin/env bash
# Install what one use of this checkout needs on a fresh Debian machine:
#
#   scripts/install.sh core   what the package needs (`make demo`): python3 and its venv
#                             module, then a virtualenv .venv with configdrive installed by
#                             `pip install .` (non-editable: what a user gets).
#   scripts/install.sh test   core, then the Debian tools the tests read our images back
#                             with and the end-to-end guests need (QEMU, OVMF, GRUB,
#                             debootstrap, cloud-init, ...), the test extras in .venv, and
#                             the real peers in .peers/ (`make test`, `make bench`).
#
# Add --list to print what that level installs and change nothing. Each run prints the
# list it worked from. Idempotent: a second run only checks (pip re-checks .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

level=${1:-test}
list_only=${2:-}
case "$level" in core|test) ;; *) echo "usage: $0 core|test [--list]" >&2; exit 2 ;; esac
case "$list_only" in ""|--list) ;; *) echo "usage: $0 core|test [--list]" >&2; exit 2 ;; esac

CORE_DEBS=(python3 python3-venv)
TEST_DEBS=(
  genisoimage xorriso mtools dosfstools     # isoinfo/genisoimage/xorriso, mcopy, fsck.fat
  gdisk fdisk parted util-linux kpartx      # sgdisk, sfdisk, partx, losetup, blkid
  qemu-utils                                # qemu-img, qemu-io, qemu-nbd
  lshw                                      # ironic-python-agent exits at start-up without it
  cryptsetup-bin                            # LUKS containers deploy must refuse by name
  e2fsprogs                                 # mkfs.ext4 -d, debugfs, e2fsck (injector)
  openssl                                   # openssl passwd -6 (injector: etc/shadow hash)
  zstd xz-utils gzip                        # compressed image fixtures
  xfsprogs pigz                             # benchmarks: xfs_io (the device's limit), a peer
  cloud-init                                # cloud-init's own config drive reader
  cloud-image-utils                         # cloud-localds: the NoCloud seeds we are compared with
  debootstrap qemu-system-x86               # the end-to-end guest (make e2e): build, boot
  ovmf grub-efi-amd64-bin                   # e2e UEFI boots: firmware, grub-mkstandalone
)
# pip's target for .venv: the package alone, or with the test extras (pytest, hypothesis).
CORE_PIP="."
TEST_PIP=".[test]"

if [ "$level" = core ]; then
  debs=("${CORE_DEBS[@]}"); pip_target=$CORE_PIP; peers="none"
else
  debs=("${CORE_DEBS[@]}" "${TEST_DEBS[@]}"); pip_target=$TEST_PIP
  peers="nova openstacksdk glean ironic-python-agent (scripts/peers.sh, into .peers/)"
fi

echo "install.sh $level: Debian packages: ${debs[*]}" >&2
echo "install.sh $level: .venv: pip install '$pip_target'" >&2
echo "install.sh $level: peers: $peers" >&2
[ "$list_only" = --list ] && exit 0

missing=()
for pkg in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "install.sh $level: installing the missing ones: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install.sh $level: every Debian package is present" >&2
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q "$pip_target"
if [ "$level" = test ]; then
  bash scripts/peers.sh
fi
