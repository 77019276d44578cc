#!/usr/bin/env bash
# Benchmark: `nodeimg base` from a multi-GiB `.img.xz` against the seed's
# method on the same file, in the same run, alternately (RUNS rounds; each
# round runs every method once, in this order):
#
#   ours:      nodeimg base --from IMG.xz --enable UNIT -o out.img
#              (one pass: decode, customise, the manifest's SHA-256; a raw
#              image, as the seed makes, made durable with fsync)
#   seed:      xz -dc IMG.xz > img (as issue 22 names it: `xz -d`, which in
#              Debian's xz 5.4.1 decodes in ONE thread without -T); losetup +
#              mount of the root; the same edits (the unit enabled, the host
#              keys removed); umount. No hash, no fsync.
#   ours+zstd: the same with --zstd --bmap (the zstd copy and the block map
#              in the same pass)
#   floor xz:  xz -T0 -dc IMG.xz > /dev/null (every core, as ours decodes)
#   floor zstd: zstd -T0 -3 of the decoded image (from the page cache)
#
#   XZ=/var/tmp/NAME/deb3g.img.xz RUNS=2 sudo -E benches/base-xz.sh
#
# XZ is an RPi-OS-like image from a real Debian arm64 root, made once:
#   nodeimg base --board rpi5 --from /var/cache/nodeimg/fixtures/boot-debian-v3/rootfs.tar \
#     --firmware /var/cache/nodeimg/fixtures/boot-debian-v3/rpi5-firmware --size 3GiB -o deb3g.img
#   xz -T0 -k deb3g.img     # multi-block, as pi-gen's `xz --threads 0`
# (`xz -T1` makes a single-block one: then ours decodes on one core too.)
# Big files go under WORK (default /var/tmp/nodeimg-base-bench), removed at
# the end. Prints every time, the best-of ratios and the load average.
set -euo pipefail
cd "$(dirname "$0")/.."
xz=${XZ:?XZ=path to an .img.xz}
runs=${RUNS:-2}
# A unit the image has (a bare Debian root has no ssh.service).
unit=${UNIT:-systemd-networkd.service}
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
load() { cut -d' ' -f1-3 /proc/loadavg; }

ours() {
	rm -f "$work"/out.img*
	local t; t=$(now)
	"$nodeimg" base --board rpi5 --from "$xz" --enable "$unit" "$@" \
		-o "$work/out.img" >/dev/null
	since "$t"
}
seed() {
	local t; t=$(now)
	xz -dc "$xz" >"$work/seed.img"
	local p2
	p2=$(sfdisk -J "$work/seed.img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][1]["start"]*512)')
	loop=$(losetup -f --show -o "$p2" "$work/seed.img")
	mount "$loop" "$work/mnt"
	mkdir -p "$work/mnt/etc/systemd/system/multi-user.target.wants"
	ln -sf "/lib/systemd/system/$unit" "$work/mnt/etc/systemd/system/multi-user.target.wants/$unit"
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
ratio() { echo "($1) / ($2)" | bc -l; }
best() { printf '%s\n' "$@" | sort -g | head -1; }

blocks=$(xz --robot -l "$xz" | awk -F'\t' '$1 == "totals" { print $3 }')
printf 'source: %s (%d MiB compressed, %s xz blocks), load average at start: %s\n' \
	"$xz" $(($(stat -c %s "$xz") >> 20)) "$blocks" "$(load)"
o=(); s=(); z=(); fx=(); fz=()
for i in $(seq 1 "$runs"); do
	o+=("$(ours)")
	s+=("$(seed)")
	z+=("$(ours --zstd --bmap)")
	fx+=("$(floor_xz)")
	fz+=("$(floor_zstd)")
	rm -f "$work/seed.img" "$work"/out.img*
	printf 'run %d: ours %.2f s, seed %.2f s, ours+zstd+bmap %.2f s, xz -T0 -dc %.2f s, zstd -T0 %.2f s (load %s)\n' \
		"$i" "${o[-1]}" "${s[-1]}" "${z[-1]}" "${fx[-1]}" "${fz[-1]}" "$(load)"
done
bo=$(best "${o[@]}"); bs=$(best "${s[@]}"); bz=$(best "${z[@]}"); bx=$(best "${fx[@]}"); bf=$(best "${fz[@]}")
printf 'best of %d: ours %.2f s, seed %.2f s, ours+zstd+bmap %.2f s, xz -T0 -dc %.2f s, zstd -T0 %.2f s\n' \
	"$runs" "$bo" "$bs" "$bz" "$bx" "$bf"
printf 'ours / seed: %.2fx (target <= 0.7)   ours / (xz -T0 -dc > /dev/null): %.2fx (target <= 1.3)\n' \
	"$(ratio "$bo" "$bs")" "$(ratio "$bo" "$bx")"
printf 'ours+zstd+bmap / seed: %.2fx   ours+zstd+bmap / (xz -T0 -dc + zstd -T0): %.2fx\n' \
	"$(ratio "$bz" "$bs")" "$(ratio "$bz" "$bx + $bf")"
printf 'load average at end: %s\n' "$(load)"
