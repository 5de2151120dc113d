#!/usr/bin/env bash
# Make the glean variant of the end-to-end guest (tests/e2e/): the same Debian guest with
# glean (from PyPI) configuring it from the config drive, and no cloud-init at all.
#
#   bash scripts/e2e-guest-glean.sh GUESTDIR OUTDIR
#
# GUESTDIR is what scripts/e2e-guest.sh made; its disk-config.qcow2 (root + an empty
# config-v2 partition) is copied and its root filesystem changed in place, so the disk
# layout and the kernel stay those of the cloud-init guest. OUTDIR gets:
#   vmlinuz, initrd.img      the guest's kernel and initramfs (unchanged)
#   disk-config.qcow2        GPT disk: partition 1 = the glean root, 2 = an empty config-v2
#
# Set up as glean's README says for systemd: `pip install glean`, then `glean-install`,
# which enables glean-early.service (at boot: mounts the drive labelled config-2 on
# /mnt/config, sets the hostname and root's keys from meta_data.json) and adds a udev rule
# that starts glean@IFACE.service for each NIC (writes /etc/network/interfaces.d/IFACE.cfg
# from network_data.json, then runs ifup). glean goes into a venv (/opt/glean): Debian's
# python is externally managed (PEP 668), and glean-install records the venv's interpreter
# in the scripts its units run. A report service prints "E2E key=value" lines on the
# serial console once glean has configured eth0, then powers off. Needs root (loop mount,
# chroot), the Debian mirror and PyPI; takes about a minute.
set -euo pipefail

GUEST=${1:?usage: e2e-guest-glean.sh GUESTDIR OUTDIR}
OUT=${2:?usage: e2e-guest-glean.sh GUESTDIR OUTDIR}
GLEAN_VENV=/opt/glean

[ "$(id -u)" = 0 ] || { echo "e2e-guest-glean.sh: needs root (mount, chroot)" >&2; exit 1; }
for tool in sfdisk losetup fstrim e2fsck qemu-img; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] \
    || { echo "e2e-guest-glean.sh: $tool is not installed (run scripts/install.sh)" >&2; exit 1; }
done
for f in vmlinuz initrd.img disk-config.qcow2; do
  [ -f "$GUEST/$f" ] || { echo "e2e-guest-glean.sh: no $GUEST/$f" >&2; exit 1; }
done

mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.build.XXXXXX")
ROOTFS=$WORK/rootfs
loop=""
source "$(dirname "${BASH_SOURCE[0]}")/e2e-chroot.sh"
cleanup() {
  unmount_lazily
  [ -z "$loop" ] || losetup -d "$loop" 2>/dev/null || true
  remove_work
}
trap cleanup EXIT
step() { echo "e2e-guest-glean.sh: $*" >&2; }
# A clean environment: the build host's own pip settings (indexes, wheel directories) have
# no meaning inside the guest.
in_guest() {
  chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"
}

step "mounting the root partition of a copy of $GUEST/disk-config.qcow2"
qemu-img convert -q -f qcow2 -O raw "$GUEST/disk-config.qcow2" "$WORK/disk.raw"
root_start=$(sfdisk --json "$WORK/disk.raw" | python3 -c \
  'import json,sys; p = json.load(sys.stdin)["partitiontable"]["partitions"][0]; print(p["start"], p["size"])')
read -r start size <<<"$root_start"
loop=$(losetup --show -f -o $((start * 512)) --sizelimit $((size * 512)) "$WORK/disk.raw")
mkdir -p "$ROOTFS"
mount -t ext4 "$loop" "$ROOTFS"
mounted+=("$ROOTFS")
chroot_enter
# The build host's resolver for apt and pip; the guest's own file goes back afterwards.
cp -a "$ROOTFS/etc/resolv.conf" "$WORK/resolv.conf.guest" 2>/dev/null || true
cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf"

step "installing python3-venv; purging cloud-init"
# (&& chains: set -e does not apply inside a list that ends in ||.)
{
  in_guest apt-get update -q \
    && in_guest apt-get install -y -q --no-install-recommends python3-venv \
    && in_guest apt-get purge -y -q --autoremove cloud-init   # purged, not disabled: what
                                                               # the guest shows is glean's
} >"$WORK/apt.log" 2>&1 || { tail -n 40 "$WORK/apt.log" >&2; exit 1; }
rm -rf "$ROOTFS/etc/cloud" "$ROOTFS/var/lib/cloud"

step "pip install glean (PyPI) into $GLEAN_VENV; glean-install"
# pip trusts what the build host trusts (this host may reach PyPI through a TLS proxy with
# its own CA); the copy is removed again, the guest keeps no CA bundle of the host's.
cp -L /etc/ssl/certs/ca-certificates.crt "$ROOTFS/tmp/build-host-ca.crt"
{
  in_guest python3 -m venv "$GLEAN_VENV" \
    && in_guest "$GLEAN_VENV/bin/pip" install -q --disable-pip-version-check --no-cache-dir \
         --cert /tmp/build-host-ca.crt glean \
    && in_guest "$GLEAN_VENV/bin/glean-install"
} >"$WORK/glean.log" 2>&1 || { tail -n 40 "$WORK/glean.log" >&2; exit 1; }
rm -f "$ROOTFS/tmp/build-host-ca.crt"
glean_version=$(in_guest "$GLEAN_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("glean"))')
# What glean-install must have set up, or glean never runs at boot.
for f in /usr/lib/systemd/system/glean-early.service /usr/lib/systemd/system/glean@.service \
         /etc/udev/rules.d/99-glean.rules; do
  [ -f "$ROOTFS$f" ] || { echo "e2e-guest-glean.sh: glean-install made no $f" >&2; exit 1; }
done
in_guest systemctl is-enabled -q glean-early.service \
  || { echo "e2e-guest-glean.sh: glean-install did not enable glean-early.service" >&2; exit 1; }

step "the report service (glean $glean_version)"
cat >"$ROOTFS/usr/local/sbin/e2e-report" <<EOF
#!/bin/sh
# What glean made of the config drive, for the end-to-end test on the serial console, then
# poweroff. glean@eth0 is started by glean's udev rule whenever udev sees the NIC, so its
# end is waited for here (bounded) rather than ordered in the unit, which cannot name a
# job that may not exist yet.
GLEAN_VENV=$GLEAN_VENV
EOF
cat >>"$ROOTFS/usr/local/sbin/e2e-report" <<'EOF'
unit=glean@eth0.service
i=0
while [ "$i" -lt 180 ]; do
  state=$(systemctl show -P ActiveState "$unit")
  [ "$state" = active ] || [ "$state" = failed ] && break
  sleep 1; i=$((i + 1))
done
{
  echo "E2E glean-version=$("$GLEAN_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("glean"))')"
  command -v cloud-init >/dev/null && echo "E2E cloud-init-present=$(command -v cloud-init)"
  for u in glean-early.service "$unit"; do
    echo "E2E unit=$u $(systemctl show -P ActiveState "$u") $(systemctl show -P Result "$u")"
  done
  echo "E2E hostname=$(hostname)"
  findmnt -n -o SOURCE,FSTYPE /mnt/config | sed 's/^ *\([^ ]*\) *\(.*\)$/E2E config-mount=\1 \2/'
  ip -o -4 addr show scope global | while read -r _ ifname _ addr _; do echo "E2E address=$ifname $addr"; done
  ip -4 route show default | sed 's/^/E2E default-route=/'
  [ -f /root/.ssh/authorized_keys ] && grep -v '^#' /root/.ssh/authorized_keys | sed 's/^/E2E root-key=/'
  # On a failed glean, its own account of why.
  [ "$(systemctl show -P Result "$unit")" = success ] \
    || journalctl -b --no-pager -o cat -u glean-early.service -u "$unit" | sed 's/^/E2E-JOURNAL /'
  echo "E2E report-done"
} >/dev/console 2>&1
systemctl --no-block poweroff
EOF
chmod 755 "$ROOTFS/usr/local/sbin/e2e-report"
cat >"$ROOTFS/etc/systemd/system/e2e-report.service" <<'EOF'
[Unit]
Description=End-to-end test report, then poweroff
After=glean-early.service network.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/e2e-report

[Install]
WantedBy=multi-user.target
EOF
in_guest systemctl enable -q e2e-report.service

in_guest apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/*.log "$ROOTFS"/var/cache/debconf/*-old
if [ -e "$WORK/resolv.conf.guest" ] || [ -L "$WORK/resolv.conf.guest" ]; then
  cp -a "$WORK/resolv.conf.guest" "$ROOTFS/etc/resolv.conf"
else
  rm -f "$ROOTFS/etc/resolv.conf"
fi
# The blocks cloud-init's files held are given back (holes in disk.raw), so that the qcow2
# holds only what the guest uses.
fstrim "$ROOTFS"
chroot_leave
e2fsck -fn "$loop" >"$WORK/e2fsck.log" 2>&1 || { cat "$WORK/e2fsck.log" >&2; exit 1; }
losetup -d "$loop"; loop=""

step "disk-config.qcow2"
qemu-img convert -q -f raw -O qcow2 "$WORK/disk.raw" "$WORK/disk-config.qcow2"
cp "$GUEST/vmlinuz" "$GUEST/initrd.img" "$WORK/"
mv "$WORK"/{vmlinuz,initrd.img,disk-config.qcow2} "$OUT"/
step "done: $OUT (glean $glean_version)"
