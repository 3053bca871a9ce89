#!/bin/busybox sh
# The guest's /init (busybox sh), baked into the initramfs from vm/guest.toml's recipe.
#
# It never changes per run (so the initramfs stays cached): what to run comes from the control
# share `blkctl`, a host directory qemu.py fills for each boot:
#   env.sh      sourced: exports BLKJOURNAL_* (results path, python, disks, ...)
#   run.sh      run with the host's /bin/sh inside the chroot
#   exit_code   written here by /init when run.sh ends (absent: the guest died first)
#
# Steps: proc/sysfs/devtmpfs, insmod the modules in /modules.order (the recipe's list with their
# dependencies), mount the host's root read-only over 9p (qemu exports it with multidevs=remap), a
# tmpfs on its /run (with /run/tmp, the guest's $TMPDIR), proc, sysfs and /dev bound into it, the
# control share at /run/blkjournal, the results share at the results directory's own host path,
# DM_DISABLE_UDEV=1 (no udev: dmsetup makes its own /dev/mapper nodes), chroot, run, record the
# exit code, poweroff -f.
export PATH=/bin:/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
say() { echo "blkjournal-init: $*" > /dev/console; }
die() { say "FAILED: $*"; sync; poweroff -f; sleep 10; }
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
while read m; do
  insmod "/lib/modules/$m.ko" || say "insmod $m failed"
done < /modules.order
H=/mnt/host
O9P=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o "$O9P,ro,cache=loose" hostroot "$H" || die "mount of the host root (9p hostroot)"
mount -t tmpfs -o mode=755 tmpfs "$H/run" || die "tmpfs on /run"
mkdir -p -m 1777 "$H/run/tmp"
mount -t proc proc "$H/proc"
mount -t sysfs sysfs "$H/sys"
mount -o rbind /dev "$H/dev" || die "bind of /dev"
mkdir -p "$H/run/blkjournal"
mount -t 9p -o "$O9P" blkctl "$H/run/blkjournal" || die "mount of the control share"
. "$H/run/blkjournal/env.sh" || die "env.sh"
if [ -n "$BLKJOURNAL_RESULTS" ]; then
  mkdir -p "$H$BLKJOURNAL_RESULTS" 2>/dev/null
  mount -t 9p -o "$O9P" blkresults "$H$BLKJOURNAL_RESULTS" || die "mount of the results share"
fi
export DM_DISABLE_UDEV=1
say "running"
setsid -c chroot "$H" /bin/sh /run/blkjournal/run.sh </dev/ttyS0 >/dev/ttyS0 2>&1
rc=$?
echo "$rc" > "$H/run/blkjournal/exit_code"
say "exit $rc"
sync
poweroff -f
sleep 10
