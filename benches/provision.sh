#!/usr/bin/env bash
# Provisioning benchmark row for `nodeimg base` (issue 22: `base --provision`
# ≤ 1.0× the seed): the same package set (PACKAGES, default `hello`)
# installed into the same plain base, RUNS times each, alternating, by
#   nodeimg base --from PLAIN --provision install.sh -o OUT
#     (the output file itself is the image the chroot works on; manifest,
#     SHA-256 and the clean check included)
# and by the seed's method
#   cp --sparse=always PLAIN + losetup + mount + bind /proc /sys /dev
#   + chroot apt-get + umount + losetup -d.
# Both run apt-get against the archive named in the image's sources.list
# (the Debian recipe fixture: the real deb.debian.org, whose package lists
# the fixture already holds, so each run downloads and unpacks the same
# .debs). Run as root with the aarch64 binfmt handler registered:
#
#   benches/provision.sh [PLAIN.img]   # default: the fixture cache's
#       $NODEIMG_FIXTURE_CACHE/debian-recipes-v1/plain.img (made by
#       `cargo nextest run --test provision`); RUNS=3 PACKAGES=hello
#       WORKDIR=/var/tmp (outputs go there; with PLAIN on the same btrfs or
#       XFS, ours clones it and the seed's cp copies it sparsely)
#   PACKAGES=none: no apt step at all (the script is `true`), which leaves
#       each method's fixed cost around the scripts: the floor the ratio of
#       a real package set is made of
#
# Prints each run, the load average before and after, and the ratio of the
# medians (nodeimg / seed; below 1 is faster). A second ratio adds to the
# seed what it takes to get the artefact ours ends with: `sha256sum` of the
# result (the manifest's hash), timed after the seed's run.
set -euo pipefail
cd "$(dirname "$0")/.."
plain=${1:-${NODEIMG_FIXTURE_CACHE:-/var/cache/nodeimg/fixtures}/debian-recipes-v1/plain.img}
packages=${PACKAGES:-hello}
runs=${RUNS:-3}
bin=${NODEIMG:-target/release/nodeimg}
[ "$(id -u)" = 0 ] || { echo "provision.sh: needs root (loop devices, mounts, chroot)" >&2; exit 1; }
[ -f "$plain" ] || { echo "provision.sh: no $plain: run cargo nextest run --test provision once" >&2; exit 1; }
[ -x "$bin" ] || { echo "provision.sh: build nodeimg first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d "${WORKDIR:-/var/tmp}/nodeimg-provision-bench.XXXXXX")
mnt="$work/mnt"
loop=
cleanup() {
  for m in dev/pts dev sys proc; do umount "$mnt/$m" 2>/dev/null || true; done
  umount "$mnt" 2>/dev/null || true
  if [ -n "$loop" ]; then losetup -d "$loop" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
if [ "$packages" = none ]; then
  step=(true)
else
  # shellcheck disable=SC2206 # PACKAGES is a list
  step=(apt-get install -y --no-install-recommends $packages)
fi
printf '#!/bin/sh\nset -e\n%s\n' "${step[*]}" >"$work/install.sh"
now() { date +%s.%N; }

ours() {
  local t0
  rm -f "$work"/nodeimg.img*
  t0=$(now)
  "$bin" base --board odroid-c4 --from "$plain" --provision "$work/install.sh" \
    -o "$work/nodeimg.img" >"$work/nodeimg.log" 2>&1 ||
    { tail -5 "$work/nodeimg.log" >&2; exit 1; }
  t=$(echo "$(now) - $t0" | bc)
}

# Runs in this shell (not a $(…) subshell), so the EXIT trap sees $loop.
seed() {
  local t0 off
  rm -f "$work/seed.img"
  t0=$(now)
  cp --sparse=always "$plain" "$work/seed.img"
  off=$(sfdisk --json "$work/seed.img" | python3 -c 'import json,sys; p=[p for p in json.load(sys.stdin)["partitiontable"]["partitions"] if p["type"]=="83"][0]; print(p["start"]*512, p["size"]*512)')
  loop=$(losetup --find --show --offset "${off% *}" --sizelimit "${off#* }" "$work/seed.img")
  mkdir -p "$mnt"
  mount "$loop" "$mnt"
  for m in proc sys dev dev/pts; do mount --bind "/$m" "$mnt/$m"; done
  cp /etc/resolv.conf "$mnt/etc/resolv.conf"
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    chroot "$mnt" "${step[@]}" >"$work/seed.log" 2>&1 ||
    { tail -5 "$work/seed.log" >&2; exit 1; }
  for m in dev/pts dev sys proc; do umount "$mnt/$m"; done
  umount "$mnt"
  losetup -d "$loop"
  loop=
  t=$(echo "$(now) - $t0" | bc)
  t0=$(now)
  sha256sum "$work/seed.img" >/dev/null
  th=$(echo "$(now) - $t0" | bc)
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Both read the same input: have it in the page cache before either starts.
cat "$plain" >/dev/null
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (shared); input $plain; packages: $packages"
: >"$work/ours.t"
: >"$work/seed.t"
: >"$work/seedh.t"
for i in $(seq 1 "$runs"); do
  # Alternate which goes first, so neither always meets a warmer machine.
  if [ $((i % 2)) = 1 ]; then
    ours; a=$t; seed; b=$t
  else
    seed; b=$t; ours; a=$t
  fi
  echo "$a" >>"$work/ours.t"
  echo "$b" >>"$work/seed.t"
  echo "$b + $th" | bc >>"$work/seedh.t"
  printf 'run %d: nodeimg base --provision %6.1f s   seed (cp + losetup + mount + chroot apt + umount) %6.1f s   ratio %.2f   load %s\n' \
    "$i" "$a" "$b" "$(echo "$a / $b" | bc -l)" "$(cut -d' ' -f1 /proc/loadavg)"
done
a=$(median <"$work/ours.t")
b=$(median <"$work/seed.t")
c=$(median <"$work/seedh.t")
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
printf 'provision %s, median of %d alternating runs: nodeimg %.2f s, seed %.2f s, ratio %.2f (ours %+.2f s)\n' \
  "$packages" "$runs" "$a" "$b" "$(echo "$a / $b" | bc -l)" "$(echo "$a - $b" | bc -l)"
printf 'with the hash ours records: seed + sha256sum %.2f s, ratio %.2f\n' "$c" "$(echo "$a / $c" | bc -l)"
