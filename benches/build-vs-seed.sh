#!/usr/bin/env bash
# Benchmark: `nodeimg build` of an N-node cluster against the seed's method
# for the same cluster (the base once, then per node: cp of the whole base,
# loop mount as root, the node's writes, umount), alternately in the same
# run (RUNS rounds, each: nodeimg build from scratch, then the seed's
# method, then the floor).
#
#   sudo benches/build-vs-seed.sh                      # the demo base, NODES=50 SEED_NODES=5
#   BASE=/var/tmp/rpios-3g.img NODES=50 SEED_NODES=3 sudo benches/build-vs-seed.sh
#   XZ=/var/tmp/NAME/deb3g.img.xz NODES=7 RUNS=2 sudo benches/build-vs-seed.sh
#
# BASE is a raw RPi-OS-like disk image (default: examples/demo's, decompressed;
# for the issue's figure, a ~3 GiB one from a Debian arm64 root tree: `nodeimg
# base --board rpi5 --from rootfs.tar --firmware FW --size 3GiB`, see
# docs/build.md "Speed"). With XZ (an `.img.xz` of such a base, see
# benches/base-xz.sh) the cluster's source is the `.img.xz` itself, the seed's
# base step is `xz -dc` of it (one thread, as Debian's xz 5.4.1 decodes
# without -T), SEED_NODES defaults to NODES (no extrapolation), and the floor
# `xz -T0 -dc | zstd -T0 -3 > /dev/null` of the same bytes is timed every
# round (issue 22: the 7-node build within 1.5x of it). Otherwise the seed
# method runs SEED_NODES times and each copy is deleted before the next
# (disk space); its base copy is timed apart, its per-node mean is compared
# and extrapolated to NODES. Big files go under WORK (default
# /var/tmp/nodeimg-bench) and are removed at the end. Needs root,
# util-linux, e2fsprogs, zstd, xz-utils and nodeimg built with `cargo build
# --release`. Prints every time and the load average.
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${NODES:-50}
xz_src=${XZ:-}
runs=${RUNS:-1}
if [ -n "$xz_src" ]; then seed_nodes=${SEED_NODES:-$nodes}; else seed_nodes=${SEED_NODES:-5}; fi
work=${WORK:-/var/tmp/nodeimg-bench}
nodeimg=${NODEIMG:-target/release/nodeimg}
export SOURCE_DATE_EPOCH=1767225600
[ "$(id -u)" = 0 ] || { echo "build-vs-seed.sh: the seed method needs root (loop mounts)" >&2; exit 1; }
mkdir -p "$work"
mnt=$work/mnt
loop=
cleanup() {
	if mountpoint -q "$mnt" 2>/dev/null; then umount "$mnt"; fi
	if [ -n "$loop" ]; then losetup -d "$loop" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }

base=${BASE:-}
source=$base
if [ -n "$xz_src" ]; then
	# The raw image, once, only to read its users and offsets before the clock.
	base=$work/ref.img
	xz -T0 -dc "$xz_src" >"$base"
	source=$(realpath "$xz_src")
elif [ -z "$base" ]; then
	base=$work/demo-base.img
	zstd -q -d -f examples/demo/rpios-demo.img.zst -o "$base"
	source=$base
fi
size=$(stat -c %s "$base")

# The root partition, and the login user both methods give SSH keys: the
# demo's `pi` where the base has it, else root (a plain Debian root tree
# has no pi, and nodeimg only configures users the image already has).
p2=$(sfdisk -J "$base" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][1]["start"]*512)')
passwd=$(debugfs -R "cat /etc/passwd" "$base?offset=$p2" 2>/dev/null)
login=pi
grep -q '^pi:' <<<"$passwd" || login=root
home=$(awk -F: -v u="$login" '$1 == u { print $6 }' <<<"$passwd")
[ -n "$home" ] || { echo "build-vs-seed.sh: $base: no user $login in /etc/passwd" >&2; exit 1; }
# The demo's time zone, where the base has tzdata.
tz_edit=()
debugfs -R "stat /usr/share/zoneinfo/Europe/Berlin" "$base?offset=$p2" 2>&1 | grep -q '^Inode:' ||
	tz_edit=(-e '/^timezone = /d')

# The cluster: the demo's settings, NODES workers, the base as its source.
cluster=$work/cluster/cluster.toml
mkdir -p "$work/cluster"
{
	sed -e "s|^source = .*|source = \"$source\"|" -e "s|^user = .*|user = \"$login\"|" \
		"${tz_edit[@]}" -e '/^\[\[node\]\]/,$d' examples/demo/cluster.toml
	printf '[[node]]\nhostname = "controlplane"\naddress = "192.168.1.10/24"\n'
	for i in $(seq 0 $((nodes - 2))); do printf '\n[[node]]\nhostname = "node%d"\n' "$i"; done
} >"$cluster"

mkdir -p "$mnt"
seed_round() {
	t2=$(now)
	if [ -n "$xz_src" ]; then
		xz -dc "$xz_src" >"$work/seed-base.img"
	else
		cp --sparse=always "$base" "$work/seed-base.img"
	fi
	t2b=$(now)
	for i in $(seq 1 "$seed_nodes"); do
		cp --sparse=always "$work/seed-base.img" "$work/seed-node.img"
		loop=$(losetup -f --show -o "$p2" "$work/seed-node.img")
		mount "$loop" "$mnt"
		echo "node$i" >"$mnt/etc/hostname"
		printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tnode%d\n' "$i" >"$mnt/etc/hosts"
		install -d -m 0700 "$mnt$home/.ssh"
		echo "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@laptop" >"$mnt$home/.ssh/authorized_keys"
		install -d -m 0700 "$mnt/root"
		install -m 0600 /dev/null "$mnt/root/keys.txt"
		head -c 64 /dev/urandom | base64 >"$mnt/root/keys.txt"
		install -d "$mnt/usr/local/lib/nodeimg"
		printf '#!/bin/bash\nkubeadm join 192.168.1.10:6443\n' >"$mnt/usr/local/lib/nodeimg/bootstrap.sh"
		umount "$mnt"
		losetup -d "$loop"
		loop=
		rm -f "$work/seed-node.img"
	done
	t3=$(now)
	rm -f "$work/seed-base.img"
}
build_runs=(); seed_runs=(); floor_runs=()
for r in $(seq 1 "$runs"); do
	rm -rf "$work/dist" "$work/.dist.cache"
	t0=$(now)
	"$nodeimg" build "$cluster" --out "$work/dist" --no-tool-check >/dev/null
	t1=$(now)
	build_s=$(echo "$t1 - $t0" | bc -l)
	build_runs+=("$build_s")
	seed_round
	seed_runs+=("$(echo "$t3 - $t2" | bc -l)")
	floor_s=
	if [ -n "$xz_src" ]; then
		t0=$(now)
		xz -T0 -dc "$xz_src" | zstd -q -T0 -3 -c >/dev/null
		t1=$(now)
		floor_s=$(echo "$t1 - $t0" | bc -l)
		floor_runs+=("$floor_s")
	fi
	printf 'round %d: nodeimg build %.2f s, seed (base + %d nodes) %.2f s%s (load %s)\n' "$r" "$build_s" \
		"$seed_nodes" "${seed_runs[-1]}" "${floor_s:+, xz -T0 -dc | zstd -T0 $floor_s s}" "$(cut -d' ' -f1-3 /proc/loadavg)"
done
best() { printf '%s\n' "$@" | sort -g | head -1; }
build_s=$(best "${build_runs[@]}")
# Nothing changed: input hashes come from the cache of file status, the raw
# base is the one kept beside the output, every node is carried over.
t0=$(now)
"$nodeimg" build "$cluster" --out "$work/dist" --no-tool-check >/dev/null
t1=$(now)
noop_s=$(echo "$t1 - $t0" | bc -l)
# The same with --rehash: every input hashed, the base decompressed again.
t0=$(now)
"$nodeimg" build "$cluster" --out "$work/dist" --no-tool-check --rehash >/dev/null
t1=$(now)
rehash_s=$(echo "$t1 - $t0" | bc -l)
# One more node on the built cluster: the incremental build stamps only it.
printf '\n[[node]]\nhostname = "node%d"\n' "$((nodes - 1))" >>"$cluster"
t0=$(now)
"$nodeimg" build "$cluster" --out "$work/dist" --no-tool-check >/dev/null
t1=$(now)
add_s=$(echo "$t1 - $t0" | bc -l)
# The floors for the same bytes: reading the raw base once (what hashing it
# costs at least) and zstd -T0 of it.
t0=$(now)
sha256sum "$base" >/dev/null
t1=$(now)
sha_s=$(echo "$t1 - $t0" | bc -l)
t0=$(now)
zstd -q -T0 -3 -c "$base" >/dev/null
t1=$(now)
zstd_s=$(echo "$t1 - $t0" | bc -l)
seed_base_s=$(echo "$t2b - $t2" | bc -l)
# Per node without the one base copy; the whole cluster extrapolated from it.
per_seed=$(echo "($t3 - $t2b) / $seed_nodes" | bc -l)
seed_total=$(echo "$seed_base_s + $nodes * $per_seed" | bc -l)
per_build=$(echo "$build_s / $nodes" | bc -l)
printf 'base: %s (%d MiB), login user %s\n' "$base" $((size >> 20)) "$login"
printf 'nodeimg build, %d nodes (base customised + zstd + bmap + all nodes + sums): %.2f s, %.3f s per node\n' "$nodes" "$build_s" "$per_build"
printf 'seed method: base cp %.2f s, then %.3f s per node (cp + loop mount + writes + umount, mean of %d); %d nodes: %.2f s (extrapolated)\n' \
	"$seed_base_s" "$per_seed" "$seed_nodes" "$nodes" "$seed_total"
printf 'ratio for %d nodes (seed / nodeimg build): %.1fx; per node: %.1fx\n' \
	"$nodes" "$(echo "$seed_total / $build_s" | bc -l)" "$(echo "$per_seed / $per_build" | bc -l)"
printf 'nodeimg build again, nothing changed: %.3f s (with --rehash: %.2f s; floors for the base: sha256sum %.2f s, zstd -T0 %.2f s)\n' \
	"$noop_s" "$rehash_s" "$sha_s" "$zstd_s"
printf 'nodeimg build adding node %d to the built cluster (stamps that node only): %.3f s\n' \
	"$nodes" "$add_s"
if [ -n "$xz_src" ]; then
	floor=$(best "${floor_runs[@]}")
	seed_best=$(best "${seed_runs[@]}")
	printf 'source %s; best of %d rounds: nodeimg build %.2f s, seed %.2f s, xz -T0 -dc | zstd -T0 -3 %.2f s\n' \
		"$xz_src" "$runs" "$build_s" "$seed_best" "$floor"
	printf 'nodeimg build of %d nodes / (xz decode + zstd encode): %.2fx (target <= 1.5); seed (xz -dc + %d x cp, mount, writes, umount) / nodeimg build: %.2fx\n' \
		"$nodes" "$(echo "$build_s / $floor" | bc -l)" "$seed_nodes" "$(echo "$seed_best / $build_s" | bc -l)"
fi
printf 'artefacts: %s\n' "$(du -sh "$work/dist" | cut -f1)"
printf 'load average: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
