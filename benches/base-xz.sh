#!/usr/bin/env bash
# Benchmark: `nodeimg base` from a multi-GiB `.img.xz` against the seed's
# method on the same file, in the same run, alternately (RUNS times each):
#
#   nodeimg: base --from IMG.xz --zstd --bmap (decode, customise, one read for
#            the manifest's SHA-256 and zstd on separate threads, bmap)
#   seed:    xz -T0 -dc > img; losetup + mount the root; the same edits
#            (a unit enabled, host keys removed); umount
#   floors:  xz -T0 -dc > /dev/null, and zstd -T0 -3 of the raw image
#
#   XZ=/var/tmp/deb3g.img.xz sudo benches/base-xz.sh
#
# XZ is an RPi-OS-like image (e.g. `nodeimg base --board rpi5 --from
# rootfs.tar --size 3GiB` of a real Debian arm64 tree, then `xz -T0`). Big
# files go under WORK (default /var/tmp/nodeimg-base-bench), removed at the
# end. Prints each time, the ratios and the load average.
set -euo pipefail
cd "$(dirname "$0")/.."
xz=${XZ:?XZ=path to an .img.xz}
runs=${RUNS:-2}
work=${WORK:-/var/tmp/nodeimg-base-bench}
nodeimg=$(realpath "${NODEIMG:-target/release/nodeimg}")
export SOURCE_DATE_EPOCH=1767225600
[ "$(id -u)" = 0 ] || { echo "base-xz.sh: the seed method needs root (loop mounts)" >&2; exit 1; }
mkdir -p "$work/mnt"
loop=
cleanup() {
	if mountpoint -q "$work/mnt" 2>/dev/null; then umount "$work/mnt"; fi
	if [ -n "$loop" ]; then losetup -d "$loop" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l; }

ours() {
	rm -f "$work"/out.img*
	local t; t=$(now)
	"$nodeimg" base --board rpi5 --from "$xz" --enable ssh.service --zstd --bmap \
		-o "$work/out.img" >/dev/null
	since "$t"
}
seed() {
	local t; t=$(now)
	xz -T0 -dc "$xz" >"$work/seed.img"
	local p2
	p2=$(sfdisk -J "$work/seed.img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][1]["start"]*512)')
	loop=$(losetup -f --show -o "$p2" "$work/seed.img")
	mount "$loop" "$work/mnt"
	mkdir -p "$work/mnt/etc/systemd/system/multi-user.target.wants"
	ln -sf /lib/systemd/system/ssh.service "$work/mnt/etc/systemd/system/multi-user.target.wants/ssh.service"
	rm -f "$work"/mnt/etc/ssh/ssh_host_*
	umount "$work/mnt"
	losetup -d "$loop"
	loop=
	since "$t"
}
floor_xz() {
	local t; t=$(now)
	xz -T0 -dc "$xz" >/dev/null
	since "$t"
}
floor_zstd() {
	local t; t=$(now)
	zstd -q -T0 -3 -c "$work/seed.img" >/dev/null
	since "$t"
}
best() { printf '%s\n' "$@" | sort -g | head -1; }
o=(); s=(); fx=(); fz=()
for i in $(seq 1 "$runs"); do
	o+=("$(ours)")
	s+=("$(seed)")
	fx+=("$(floor_xz)")
	fz+=("$(floor_zstd)")
	rm -f "$work/seed.img" "$work"/out.img*
	printf 'run %d: nodeimg %.2f s, seed %.2f s, xz -T0 -dc %.2f s, zstd -T0 %.2f s\n' \
		"$i" "${o[-1]}" "${s[-1]}" "${fx[-1]}" "${fz[-1]}"
done
bo=$(best "${o[@]}"); bs=$(best "${s[@]}"); bx=$(best "${fx[@]}"); bz=$(best "${fz[@]}")
printf 'source: %s (%d MiB compressed), best of %d\n' "$xz" $(($(stat -c %s "$xz") >> 20)) "$runs"
printf 'nodeimg / seed: %.2fx   nodeimg / (xz -T0 -dc to /dev/null): %.2fx   nodeimg / (xz -dc + zstd -T0): %.2fx\n' \
	"$(echo "$bo / $bs" | bc -l)" "$(echo "$bo / $bx" | bc -l)" "$(echo "$bo / ($bx + $bz)" | bc -l)"
printf 'load average: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
