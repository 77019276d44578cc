#!/usr/bin/env bash
# Benchmark: `nodeimg stamp --all` of a 50-node cluster against the seed's
# per-node method (cp of the base, loop mount as root, the same writes,
# umount), in the same run, on a ~3 GiB Raspberry-Pi-OS-like base whose
# root is a real Debian arm64 tree (fixtures/make-debian-rootfs.sh).
#
#   sudo benches/seed-stamp.sh            # NODES=50 SEED_NODES=3 SIZE_MIB=3072
#   BASE_ONLY=1 sudo benches/seed-stamp.sh   # only build the base
#   BASE=/var/tmp/x/base.img sudo benches/seed-stamp.sh
#       # a base made by `nodeimg base --board rpi5 --from rootfs.tar
#       # --firmware FW --size 3GiB` instead (issue 22's figure: the root
#       # tree of $NODEIMG_FIXTURE_CACHE/debian-recipes-v1/rootfs.tar); its
#       # login user is `pi` where it has one, else root
#
# Needs root (the seed method loop-mounts), e2fsprogs, dosfstools, mtools,
# fdisk, openssh-client, /usr/bin/time, and nodeimg built with
# `cargo build --release`. Prints per-node times, the ratio, delta sizes and
# nodeimg's peak memory on this base and on the small test base (memory must
# not grow with the base). The seed method runs SEED_NODES times (each copies
# the whole base), stamp runs for all NODES; per-node times are compared.
# The stamp runs use --no-tool-check (the Debian tree has no kubeadm: the
# check is one lookup per run, not per node).
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${NODES:-50}
seed_nodes=${SEED_NODES:-3}
size_mib=${SIZE_MIB:-3072}
work=${WORK:-target/bench-stamp}
rootfs=${ROOTFS:-fixtures/debian-arm64-rootfs.tar}
nodeimg=${NODEIMG:-target/release/nodeimg}
export SOURCE_DATE_EPOCH=1767225600 MTOOLS_SKIP_CHECK=1 LC_ALL=C
disk_id=8a438930

[ "$(id -u)" = 0 ] || { echo "seed-stamp.sh: the seed method needs root (loop mounts)" >&2; exit 1; }
[ -n "${BASE:-}" ] || [ -f "$rootfs" ] || { echo "seed-stamp.sh: no $rootfs: run fixtures/make-debian-rootfs.sh $rootfs" >&2; exit 1; }
mkdir -p "$work"
work=$(cd "$work" && pwd)
mnt=$work/mnt
loop=
cleanup() {
	if mountpoint -q "$mnt" 2>/dev/null; then umount "$mnt"; fi
	if [ -n "$loop" ]; then losetup -d "$loop" 2>/dev/null || true; fi
	rm -f "$work"/seed-node.img
}
trap cleanup EXIT

now() { date +%s.%N; }

# --- The base: MBR, FAT32 bootfs, ext4 rootfs holding the Debian tree ------
base=${BASE:-$work/base.img}
if [ -n "${BASE:-}" ]; then
	[ -f "$base" ] || { echo "seed-stamp.sh: no base $base" >&2; exit 1; }
elif [ ! -f "$base" ] || [ "$rootfs" -nt "$base" ]; then
	echo "building a ${size_mib} MiB base from $rootfs"
	tree=$work/tree
	rm -rf "$tree" && mkdir -p "$tree"
	tar -xf "$rootfs" -C "$tree" --numeric-owner
	rm -f "$tree"/etc/ssh/ssh_host_*
	# --variant=extract unpacks packages without running maintainer
	# scripts: base-files' os-release and the user database are missing.
	[ -e "$tree/usr/lib/os-release" ] || printf 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\nID=debian\n' >"$tree/usr/lib/os-release"
	[ -e "$tree/etc/os-release" ] || ln -s ../usr/lib/os-release "$tree/etc/os-release"
	[ -s "$tree/etc/passwd" ] || echo 'root:x:0:0:root:/root:/bin/bash' >"$tree/etc/passwd"
	[ -s "$tree/etc/group" ] || printf 'root:x:0:\nshadow:x:42:\n' >"$tree/etc/group"
	[ -s "$tree/etc/shadow" ] || { echo 'root:*:20362:0:99999:7:::' >"$tree/etc/shadow"; chmod 0640 "$tree/etc/shadow"; }
	mkdir -p "$tree/root" "$tree/etc/systemd/system" "$tree/etc/ssh"
	echo 'pi:x:1000:1000:,,,:/home/pi:/bin/bash' >>"$tree/etc/passwd"
	echo 'pi:x:1000:' >>"$tree/etc/group"
	echo 'pi:*:20362:0:99999:7:::' >>"$tree/etc/shadow"
	install -d -o 1000 -g 1000 "$tree/home/pi"
	echo raspberrypi >"$tree/etc/hostname"
	printf '127.0.0.1\tlocalhost\n\n127.0.1.1\traspberrypi\n' >"$tree/etc/hosts"
	echo uninitialized >"$tree/etc/machine-id"
	printf 'PARTUUID=%s-01 /boot/firmware vfat defaults 0 2\nPARTUUID=%s-02 / ext4 defaults,noatime 0 1\n' \
		"$disk_id" "$disk_id" >"$tree/etc/fstab"
	mkdir -p "$tree/boot/firmware" "$tree/etc/NetworkManager/system-connections"
	echo "Raspberry Pi reference 2025-10-01" >"$tree/etc/rpi-issue"
	boot_mib=512
	root_mib=$((size_mib - boot_mib - 8))
	rm -f "$work/boot.fat" "$work/root.ext4"
	mkfs.vfat -F 32 -n bootfs -C "$work/boot.fat" $((boot_mib * 1024)) >/dev/null
	printf 'console=serial0,115200 console=tty1 root=PARTUUID=%s-02 rootfstype=ext4 fsck.repair=yes rootwait\n' \
		"$disk_id" >"$work/cmdline.txt"
	printf 'arm_64bit=1\n[all]\n' >"$work/config.txt"
	head -c 8M /dev/urandom >"$work/kernel_2712.img"
	mcopy -i "$work/boot.fat" "$work/cmdline.txt" "$work/config.txt" "$work/kernel_2712.img" ::
	mke2fs -q -t ext4 -L rootfs -d "$tree" "$work/root.ext4" "${root_mib}M"
	rm -f "$base"
	truncate -s "${size_mib}M" "$base"
	sfdisk -q "$base" <<-EOF
		label: dos
		label-id: 0x$disk_id
		start=8M, size=${boot_mib}M, type=c
		start=$((8 + boot_mib))M, type=83
	EOF
	dd if="$work/boot.fat" of="$base" bs=1M seek=8 conv=notrunc,sparse status=none
	dd if="$work/root.ext4" of="$base" bs=1M seek=$((8 + boot_mib)) conv=notrunc,sparse status=none
	rm -rf "$tree" "$work/boot.fat" "$work/root.ext4"
fi
[ -z "${BASE_ONLY:-}" ] || { echo "base: $base"; exit 0; }
[ -x "$nodeimg" ] || { echo "seed-stamp.sh: build nodeimg first: cargo build --release" >&2; exit 1; }
root_start=$(( $(sfdisk -J "$base" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][1]["start"])') * 512 ))
root_size=$(( $(sfdisk -J "$base" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][1]["size"])') * 512 ))
boot_start=$(( $(sfdisk -J "$base" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][0]["start"])') * 512 ))
# The login user both methods give SSH keys: pi where the base has it,
# else root (nodeimg configures only users the image already has).
passwd=$(debugfs -R "cat /etc/passwd" "$base?offset=$root_start" 2>/dev/null)
login=pi
grep -q '^pi:' <<<"$passwd" || login=root
IFS=: read -r _ _ login_uid login_gid _ login_home _ < <(grep "^$login:" <<<"$passwd")

# --- The cluster: 3 control planes and workers, static addresses ------------
key=$(cat "$work/id.pub" 2>/dev/null || true)
if [ -z "$key" ]; then
	ssh-keygen -q -t ed25519 -N '' -C bench@laptop -f "$work/id"
	key=$(cat "$work/id.pub")
fi
cluster=$work/cluster.toml
{
	printf '[cluster]\nname = "bench"\nboard = "rpi5"\nflavour = "kubeadm"\napi_endpoint = "10.0.0.10:6443"\npod_subnet = "10.244.0.0/16"\nservice_subnet = "10.96.0.0/12"\n\n'
	printf '[defaults]\nuser = "%s"\nssh_keys = ["%s"]\nage_key = "generate"\ngateway = "10.0.0.1"\ndns = ["10.0.0.1"]\n\n' "$login" "$key"
	printf '[[node]]\nhostname = "controlplane"\naddress = "10.0.0.10/16"\n'
	for i in 1 2; do printf '[[node]]\nhostname = "controlplane%d"\naddress = "10.0.0.%d/16"\n' "$i" $((10 + i)); done
	for i in $(seq 0 $((nodes - 4))); do printf '[[node]]\nhostname = "node%d"\naddress = "10.0.1.%d/16"\n' "$i" $((i + 1)); done
} >"$cluster"
state=$work/cluster.state

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (shared)"
echo "base: $(du -h --apparent-size "$base" | cut -f1) ($(du -h "$base" | cut -f1) allocated), ${BASE:+given}${BASE:-root tree from $rootfs}"

# --- nodeimg stamp ----------------------------------------------------------
rm -rf "$work/out" "$work/out1"
# The first run generates the state and warms the page cache.
"$nodeimg" stamp --config "$cluster" --base "$base" --node node0 -o "$work/one.delta" --state "$state" --init-state --no-tool-check --force >/dev/null
# One round: one node alone (the run's fixed costs: opening the base, its
# identity from the manifest) and all NODES; the marginal cost per node is
# the difference over NODES - 1.
stamp_round() {
	local t0 t1
	t0=$(now)
	"$nodeimg" stamp --config "$cluster" --base "$base" --node node0 -o "$work/one.delta" --state "$state" --no-tool-check --force >/dev/null
	t1=$(now)
	/usr/bin/time -f '%e %M' -o "$work/time.all" \
		"$nodeimg" stamp --config "$cluster" --base "$base" --all --out-dir "$work/out" --state "$state" --no-tool-check --force --json >"$work/stamp.json"
	read -r all_s all_rss <"$work/time.all"
	one_s=$(echo "$t1 - $t0" | bc -l)
	per_node=$(echo "($all_s - $one_s) / ($nodes - 1)" | bc -l)
}

# --- The seed's method ------------------------------------------------------------
seed_write() { # NODE ROOT_DIR BOOT_IMG_OFFSET_IMAGE
	local n=$1 r=$2 img=$3 i
	echo "$n" >"$r/etc/hostname"
	touch "$r/etc/hosts"
	sed -i "s/^127\.0\.1\.1.*/127.0.1.1\t$n/" "$r/etc/hosts"
	grep -q '^127\.0\.1\.1' "$r/etc/hosts" || printf '127.0.1.1\t%s\n' "$n" >>"$r/etc/hosts"
	install -d -m 0700 -o "$login_uid" -g "$login_gid" "$r$login_home/.ssh"
	install -m 0600 -o "$login_uid" -g "$login_gid" "$work/id.pub" "$r$login_home/.ssh/authorized_keys"
	mkdir -p "$r/etc/ssh" "$r/etc/NetworkManager/system-connections"
	ssh-keygen -q -t ed25519 -N '' -C "root@$n" -f "$r/etc/ssh/ssh_host_ed25519_key" <<<y >/dev/null
	install -m 0600 /dev/null "$r/root/keys.txt"
	head -c 200 /dev/urandom | base64 >"$r/root/keys.txt"
	install -d "$r/etc/nodeimg" "$r/usr/local/lib/nodeimg" "$r/etc/kubernetes/pki/etcd"
	install -m 0600 /dev/null "$r/etc/nodeimg/cluster.env"
	head -c 1100 /dev/urandom | base64 >"$r/etc/nodeimg/cluster.env"
	install -m 0600 /dev/null "$r/etc/nodeimg/kubeadm.yaml"
	head -c 1200 /dev/urandom | base64 >"$r/etc/nodeimg/kubeadm.yaml"
	install -m 0755 /dev/null "$r/usr/local/lib/nodeimg/bootstrap.sh"
	head -c 3000 /dev/urandom | base64 >"$r/usr/local/lib/nodeimg/bootstrap.sh"
	head -c 6000 /dev/urandom | base64 >"$r/usr/local/lib/nodeimg/bootstrap-lib.sh"
	printf '[Unit]\nDescription=bootstrap\n[Service]\nType=oneshot\nExecStart=/usr/local/lib/nodeimg/bootstrap.sh\n[Install]\nWantedBy=multi-user.target\n' \
		>"$r/etc/systemd/system/nodeimg-bootstrap.service"
	mkdir -p "$r/etc/systemd/system/multi-user.target.wants" "$r/etc/systemd/system-preset"
	ln -sf /etc/systemd/system/nodeimg-bootstrap.service "$r/etc/systemd/system/multi-user.target.wants/"
	echo "enable nodeimg-bootstrap.service" >"$r/etc/systemd/system-preset/10-nodeimg.preset"
	printf '[connection]\nid=nodeimg\ntype=ethernet\n[ipv4]\nmethod=manual\naddress1=10.0.1.1/16,10.0.0.1\n' \
		>"$r/etc/NetworkManager/system-connections/nodeimg.nmconnection"
	chmod 0600 "$r/etc/NetworkManager/system-connections/nodeimg.nmconnection"
	for i in ca front-proxy-ca etcd/ca; do
		head -c 600 /dev/urandom | base64 >"$r/etc/kubernetes/pki/$i.crt"
		install -m 0600 /dev/null "$r/etc/kubernetes/pki/$i.key"
		head -c 200 /dev/urandom | base64 >"$r/etc/kubernetes/pki/$i.key"
	done
	mtype -i "$img@@$boot_start" ::cmdline.txt | sed "s/\$/ systemd.hostname=$n/" >"$work/cmdline.new"
	mcopy -o -i "$img@@$boot_start" "$work/cmdline.new" ::cmdline.txt
	: | mcopy -o -i "$img@@$boot_start" - ::ssh
}
mkdir -p "$mnt"
# One seed node: copy, mount, the writes, umount, sync, delete.
seed_node() {
	local t0 img=$work/seed-node.img
	sync
	t0=$(now)
	cp "$base" "$img"
	loop=$(losetup --find --show --offset "$root_start" --sizelimit "$root_size" "$img")
	mount -t ext4 "$loop" "$mnt"
	seed_write "seed$1" "$mnt" "$img"
	umount "$mnt"
	losetup -d "$loop"
	loop=
	sync "$img"
	seed_s=$(echo "$(now) - $t0" | bc -l)
	rm -f "$img"
}

# Alternating rounds: nodeimg (one node, then all), one seed node.
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
: >"$work/ours.t"
: >"$work/seed.t"
for i in $(seq 1 "$seed_nodes"); do
	stamp_round
	seed_node "$i"
	echo "$per_node" >>"$work/ours.t"
	echo "$seed_s" >>"$work/seed.t"
	printf 'round %d: nodeimg %.1f ms/node (all %d: %.2f s, one alone: %.2f s), seed %.2f s/node, ratio %.0fx, load %s\n' \
		"$i" "$(echo "$per_node * 1000" | bc -l)" "$nodes" "$all_s" "$one_s" "$seed_s" \
		"$(echo "$seed_s / $per_node" | bc -l)" "$(cut -d' ' -f1 /proc/loadavg)"
done
per_node=$(median <"$work/ours.t")
seed_per_node=$(median <"$work/seed.t")
max_delta=$(stat -c %s "$work"/out/*.delta | sort -n | tail -1)
sum_delta=$(stat -c %s "$work"/out/*.delta | paste -sd+ | bc)

# Peak memory on the small test base, for comparison.
small=$work/small.img
[ -f "$small" ] || bash fixtures/make-os-image.sh rpios "$small" >/dev/null 2>&1
/usr/bin/time -f '%e %M' -o "$work/time.small" \
	"$nodeimg" stamp --config "$cluster" --base "$small" --all --out-dir "$work/out-small" --state "$state" --no-tool-check --force --json >/dev/null
read -r _ small_rss <"$work/time.small"

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '\nnodeimg stamp --all, %d nodes: per node (marginal, median of %d rounds) %.1f ms; deltas: largest %d KiB, %d KiB in all\n' \
	"$nodes" "$seed_nodes" "$(echo "$per_node * 1000" | bc -l)" $((max_delta / 1024)) $((sum_delta / 1024))
printf '  peak memory: %d MiB on this %d MiB base, %d MiB on the %d MiB test base\n' \
	$((all_rss / 1024)) $(( $(stat -c %s "$base") / 1048576 )) $((small_rss / 1024)) $(( $(stat -c %s "$small") / 1048576 ))
printf 'seed method (cp + loop mount + writes + umount + sync), median of %d nodes: %.2f s per node\n' "$seed_nodes" "$seed_per_node"
printf 'ratio, per node: %.0fx faster (all-in for the last round, fixed costs included: %.0fx)\n' \
	"$(echo "$seed_per_node / $per_node" | bc -l)" "$(echo "$seed_per_node * $nodes / $all_s" | bc -l)"
