#!/usr/bin/env bash
# Seed corpus for the ext4_image fuzz target: tiny real images made by
# mkfs.ext4 (1 KiB blocks, a few files, a symlink, an htree directory).
# Usage: fuzz/seed-ext4.sh  (writes fuzz/corpus/ext4_image/*.img)
set -euo pipefail
cd "$(dirname "$0")"
out=corpus/ext4_image
mkdir -p "$out"
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
mkdir -p "$src/d" "$src/many"
echo hello > "$src/d/f"
head -c 5000 /dev/zero | tr '\0' 'x' > "$src/d/big"
ln -s d/f "$src/fast"
ln -s "$(printf 'long/%.0s' {1..20})" "$src/slow"
for i in $(seq 1 60); do echo "$i" > "$src/many/entry-$i"; done
make() { # name size mkfs-options...
  local name=$1 size=$2; shift 2
  rm -f "$out/$name.img"
  truncate -s "$size" "$out/$name.img"
  mkfs.ext4 -F -q -b 1024 -N 96 -O ^has_journal,^resize_inode "$@" -d "$src" "$out/$name.img"
  e2fsck -fyD "$out/$name.img" >/dev/null || true
}
make csum 256K
make gdt 256K -O ^metadata_csum,^64bit,uninit_bg
make inline 256K -O inline_data
ls -l "$out"
