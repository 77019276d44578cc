#!/bin/bash
# nodeimg first-boot check, written by nodeimg stamp on every node: at each
# boot it checks that the identity nodeimg stamped is the one the node runs
# with — the hostname, and the owner and mode of every key file stamped —
# and reports the result on the console in the first-boot report format
# (docs/firstboot.md), which `nodeimg boot` reads. What to check is listed
# in /etc/nodeimg/firstboot.list, one item a line:
#   hostname NAME          the kernel's hostname must be NAME
#   file MODE UID GID PATH PATH must exist with that octal mode and owner
#   peer ADDRESS           another node of the cluster: ping it (not fatal)
#   address ADDR/PREFIX    the stamped static address: report whether the
#   address dhcp           node has it (or, for dhcp, which lease it got)
#                          before pinging peers (not fatal)
#   gateway, dns           the cluster file's, for `nodeimg boot`'s DHCP server
set -u
# shellcheck disable=SC2034 # read by report in bootstrap-lib.sh
report_unit=nodeimg-firstboot
# shellcheck source-path=SCRIPTDIR
# shellcheck source=bootstrap-lib.sh
. "${NODEIMG_ROOT:-}/usr/local/lib/nodeimg/bootstrap-lib.sh"

list=$ROOT/etc/nodeimg/firstboot.list
report start - "first-boot check started"
if [ ! -r "$list" ]; then
	report fail list "cannot read /etc/nodeimg/firstboot.list"
	exit 1
fi

problems=()
peers=()
address=
while read -r kind a b c d; do
	case $kind in
	hostname)
		got=$(cat /proc/sys/kernel/hostname 2>/dev/null || hostname)
		[ "$got" = "$a" ] || problems+=("hostname is $got, stamped $a")
		;;
	file)
		# a=MODE b=UID c=GID d=PATH
		if [ ! -e "$ROOT$d" ]; then
			problems+=("$d is missing")
		else
			read -r gm gu gg < <(stat -c '%a %u %g' "$ROOT$d")
			[ "$((8#$gm)) $gu $gg" = "$((8#$a)) $b $c" ] ||
				problems+=("$d is mode $gm owner $gu:$gg, stamped $a $b:$c")
		fi
		;;
	peer)
		peers+=("$a")
		;;
	address)
		address=$a
		;;
	esac
done <"$list"

if [ "${#problems[@]}" -ne 0 ]; then
	report fail identity "${problems[*]}"
	exit 1
fi
report step identity "hostname and key files as stamped"

# The first global address the node has: with `dhcp`, one with a lease
# (ip-address(8): `dynamic` lists addresses with a finite lifetime).
addresses() {
	if [ "$address" = dhcp ]; then
		ip -o addr show scope global dynamic 2>/dev/null | awk '{print $4}'
	else
		ip -o addr show scope global 2>/dev/null | awk '{print $4}' | grep -Fx -- "$address"
	fi
}
has_address() { [ -n "$(addresses | head -n 1)" ]; }
if [ -n "$address" ] && [ -z "$ROOT" ] && command -v ip >/dev/null; then
	# A lease may take a while (the first DISCOVER, a slow server): a minute.
	if retry 30 2 has_address; then
		got=$(addresses | head -n 1)
		if [ "$address" = dhcp ]; then
			report step address "$got (dhcp)"
		else
			report step address "$got (static)"
		fi
	elif [ "$address" = dhcp ]; then
		report step address "no address from DHCP after a minute"
	else
		report step address "$address is not configured after a minute"
	fi
fi

if [ "${#peers[@]}" -ne 0 ]; then
	# Peers may still be booting: try each for a minute; an unreachable
	# peer is reported, not a failure of this node.
	reached=() missed=()
	for p in "${peers[@]}"; do
		if retry 30 2 ping -c 1 -W 2 "$p" >/dev/null 2>&1; then
			reached+=("$p")
		else
			missed+=("$p")
		fi
	done
	report step peers "reached: ${reached[*]:--}; not reached: ${missed[*]:--}"
fi
report ok - "first boot as stamped"
