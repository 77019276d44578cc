#!/usr/bin/env bash
# Provisioning benchmark row for `nodeimg base`: the same package set
# (PACKAGES, default `hello`) installed into the same plain base, by
#   nodeimg base --provision (private namespace, loop by offset, teardown)
# and by the seed's method (losetup + mount + bind /proc /sys /dev + chroot
# apt-get + umount). Run as root with the aarch64 binfmt handler, once:
#
#   benches/provision.sh PLAIN.img     (e.g. target/tmp/debian-provision-v1/plain.img,
#                                       made by `cargo nextest run --test provision`)
set -euo pipefail
cd "$(dirname "$0")/.."
plain=${1:?usage: benches/provision.sh PLAIN.img}
packages=${PACKAGES:-hello}
bin=${NODEIMG:-target/debug/nodeimg}
work=$(mktemp -d /var/tmp/nodeimg-provision-bench.XXXXXX)
mnt="$work/mnt"
loop=
cleanup() {
  for m in dev/pts dev sys proc; do umount "$mnt/$m" 2>/dev/null || true; done
  umount "$mnt" 2>/dev/null || true
  if [ -n "$loop" ]; then losetup -d "$loop" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
printf '#!/bin/sh\nset -e\napt-get install -y --no-install-recommends %s\n' "$packages" >"$work/install.sh"

start=$(date +%s.%N)
"$bin" base --board odroid-c4 --from "$plain" --provision "$work/install.sh" -o "$work/nodeimg.img" >/dev/null 2>&1
t_nodeimg=$(echo "$(date +%s.%N) - $start" | bc)

start=$(date +%s.%N)
cp --sparse=always "$plain" "$work/seed.img"
off=$(sfdisk --json "$work/seed.img" | python3 -c 'import json,sys; p=[p for p in json.load(sys.stdin)["partitiontable"]["partitions"] if p["type"]=="83"][0]; print(p["start"]*512, p["size"]*512)')
loop=$(losetup --find --show --offset "${off% *}" --sizelimit "${off#* }" "$work/seed.img")
mkdir -p "$mnt"
mount "$loop" "$mnt"
for m in proc sys dev dev/pts; do mount --bind "/$m" "$mnt/$m"; done
cp /etc/resolv.conf "$mnt/etc/resolv.conf"
# shellcheck disable=SC2086 # PACKAGES is a list
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  chroot "$mnt" apt-get install -y --no-install-recommends $packages >/dev/null 2>&1
for m in dev/pts dev sys proc; do umount "$mnt/$m"; done
umount "$mnt"
losetup -d "$loop"
loop=
t_seed=$(echo "$(date +%s.%N) - $start" | bc)

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores, shared)"
printf 'provision %-10s nodeimg base --provision: %6.1f s   seed (losetup+mount+chroot apt): %6.1f s   ratio %.2f\n' \
  "$packages" "$t_nodeimg" "$t_seed" "$(echo "$t_nodeimg / $t_seed" | bc -l)"
