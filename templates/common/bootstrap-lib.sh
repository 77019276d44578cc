# shellcheck shell=bash
# nodeimg bootstrap library, sourced by /usr/local/lib/nodeimg/bootstrap.sh:
# logging, bounded waits, the done-flag, and the steps several roles share.
#
# NODEIMG_ROOT (unset on a real node) relocates every file path the scripts
# read or write, never the commands they run; the tests run the real scripts
# in a scratch root with stand-ins for kubeadm, kubectl, helm, k3s and
# systemctl on PATH.

ROOT=${NODEIMG_ROOT:-}
DONE_FLAG=$ROOT/var/lib/nodeimg/bootstrap.done
LOG_FILE=$ROOT/var/log/nodeimg-bootstrap.log
PKI=$ROOT/etc/kubernetes/pki
# Helm keeps its cache under $HOME; a system unit may run without one.
export HOME=${HOME:-/root}
umask 027

log() {
	printf 'nodeimg-bootstrap: %s\n' "$*"
}

# report_unit names the unit in report lines; a script sourcing this library
# for another unit sets it before calling report.
report_unit=${report_unit:-nodeimg-bootstrap}
report_attempt=${report_attempt:-1}

# report STATUS STEP MESSAGE...: one first-boot report line, the stable
# format `nodeimg boot` reads from the console (docs/firstboot.md):
#   nodeimg-report: v1 node=NODE unit=UNIT status=STATUS step=STEP attempt=N msg=TEXT
# STATUS is start, step, wait, ok or fail; STEP one word (- for none). The
# line goes to stdout (the journal) and, on a real node, to the console.
report() {
	local status=$1 step=${2:--} node line
	shift 2
	node=$(cat "$ROOT/etc/hostname" 2>/dev/null || true)
	node=${node%%[[:space:]]*}
	line="nodeimg-report: v1 node=${node:--} unit=$report_unit status=$status step=${step// /_} attempt=$report_attempt msg=$*"
	line=${line//$'\n'/ }
	printf '%s\n' "$line"
	if [ -z "$ROOT" ] && [ -w /dev/console ]; then
		printf '%s\r\n' "$line" >/dev/console 2>/dev/null || true
	fi
}

fail() {
	log "error: $*"
	report fail "${current_step:--}" "$*"
	exit 1
}

# step NAME MESSAGE...: logs and reports the start of a named step.
step() {
	current_step=$1
	shift
	log "$*"
	report step "$current_step" "$*"
}

# bootstrap MAIN: runs MAIN once, logged to the journal (stdout) and to
# LOG_FILE; does nothing when the done-flag exists; sets the flag when MAIN
# succeeds.
bootstrap() {
	if [ -e "$DONE_FLAG" ]; then
		log "already bootstrapped ($DONE_FLAG exists); nothing to do"
		return 0
	fi
	mkdir -p "${LOG_FILE%/*}"
	report start - "bootstrap started" | tee -a "$LOG_FILE"
	# The caller runs with errexit and pipefail: a failing MAIN ends the
	# script with its status here, before the flag is set (MAIN's own fail
	# has reported why).
	"$@" 2>&1 | tee -a "$LOG_FILE"
	mkdir -p "${DONE_FLAG%/*}"
	date -u +%Y-%m-%dT%H:%M:%SZ >"$DONE_FLAG"
	log "done" | tee -a "$LOG_FILE"
	report ok - "bootstrap finished" | tee -a "$LOG_FILE"
}

# require CMD...: fails naming every command missing from this image.
require() {
	local missing=() c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || missing+=("$c")
	done
	if [ "${#missing[@]}" -ne 0 ]; then
		fail "not installed in this image: ${missing[*]} (put them into the base image: [base] provision or overlay)"
	fi
}

# retry ATTEMPTS DELAY CMD...: runs CMD until it succeeds, at most ATTEMPTS
# times, DELAY seconds apart.
retry() {
	local attempts=$1 delay=$2 i
	shift 2
	for ((i = 1; i <= attempts; i++)); do
		if "$@"; then
			return 0
		fi
		if [ "$i" -lt "$attempts" ]; then
			sleep "$delay"
		fi
	done
	return 1
}

# wait_for WHAT ATTEMPTS DELAY CMD...: retry, failing with a clear line.
wait_for() {
	local what=$1 attempts=$2 delay=$3
	shift 3
	log "waiting for $what"
	report wait "${current_step:--}" "waiting for $what"
	retry "$attempts" "$delay" "$@" ||
		fail "gave up waiting for $what after $((attempts * delay))s"
}

# tcp_open HOST PORT: a TCP connection can be made.
tcp_open() {
	# shellcheck disable=SC2016 # expanded by the inner shell
	timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# wait_for_endpoint HOST PORT: waits up to an hour for a TCP connection to a
# server that may still be booting (the first control plane, the k3s server).
wait_for_endpoint() {
	wait_for "the server at $1:$2" 360 10 tcp_open "$1" "$2"
}

# wait_for_url URL: wait_for_endpoint for the host and port of https://HOST:PORT.
wait_for_url() {
	local host=${1#https://}
	host=${host%%/*}
	local port=${host##*:}
	host=${host%:*}
	host=${host#[}
	wait_for_endpoint "${host%]}" "$port"
}

# has_address ADDRESS: the address is configured on an interface; with an
# empty ADDRESS (DHCP), a default route exists.
has_address() {
	if [ -z "$1" ]; then
		[ -n "$(ip route show default 2>/dev/null)" ]
	else
		ip -o addr show 2>/dev/null | grep -qF " $1/"
	fi
}

# wait_for_clock: certificates made with a wrong clock break TLS later, and
# boards without an RTC boot with a stale one; wait (bounded) for NTP and go
# on with a warning when it does not come.
wait_for_clock() {
	command -v timedatectl >/dev/null 2>&1 || return 0
	if retry 24 5 clock_synchronised; then
		log "clock synchronised"
	else
		log "warning: clock not synchronised after 120s; going on"
	fi
}

clock_synchronised() {
	[ "$(timedatectl show --property=NTPSynchronized --value 2>/dev/null)" = yes ]
}

# start_runtime: enables and starts the container runtime kubeadm uses, and
# enables the kubelet (kubeadm starts it).
start_runtime() {
	local unit
	if command -v crio >/dev/null 2>&1; then
		unit=crio.service
	elif command -v containerd >/dev/null 2>&1; then
		unit=containerd.service
	else
		fail "no container runtime (crio or containerd) in this image"
	fi
	log "starting $unit"
	systemctl enable --now "$unit"
	systemctl enable kubelet.service
}

# kubeadm_join HOST PORT CONFIG: waits for the API server at HOST:PORT
# (the first control plane may still be booting) and the clock, then
# kubeadm join, unless a finished join left /etc/kubernetes/kubelet.conf.
kubeadm_join() {
	wait_for_endpoint "$1" "$2"
	wait_for_clock
	if [ -e "$ROOT/etc/kubernetes/kubelet.conf" ]; then
		log "kubeadm join already done (/etc/kubernetes/kubelet.conf exists)"
	else
		log "kubeadm join"
		kubeadm join --config "$3"
	fi
}

# check_ca_material EXPECTED_HASH: the cluster CA material nodeimg stamps on
# control planes is present (kubeadm would otherwise make a new CA that no
# node trusts) and ca.crt is the CA the cluster's joins pin.
check_ca_material() {
	local want=$1 missing=() f got
	for f in ca.crt ca.key sa.key sa.pub front-proxy-ca.crt front-proxy-ca.key etcd/ca.crt etcd/ca.key; do
		[ -s "$PKI/$f" ] || missing+=("$f")
	done
	if [ "${#missing[@]}" -ne 0 ]; then
		fail "cluster CA material missing from /etc/kubernetes/pki: ${missing[*]}"
	fi
	if ! command -v openssl >/dev/null 2>&1; then
		log "openssl not installed: the CA hash is not checked here"
		return 0
	fi
	got=$(openssl x509 -in "$PKI/ca.crt" -noout -pubkey |
		openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1) ||
		fail "cannot read the public key of /etc/kubernetes/pki/ca.crt"
	[ "sha256:$got" = "$want" ] ||
		fail "/etc/kubernetes/pki/ca.crt is not the cluster CA (public key sha256:$got, cluster $want)"
	log "cluster CA $want present"
}

# user_kubeconfig USER KUBECONFIG: gives the login user a copy of an admin
# kubeconfig in ~/.kube/config (0600, theirs).
user_kubeconfig() {
	local user=$1 source=$2 entry uid gid home
	[ -n "$user" ] || return 0
	entry=$(awk -F: -v u="$user" '$1 == u { print $3 ":" $4 ":" $6 }' "$ROOT/etc/passwd")
	if [ -z "$entry" ]; then
		log "user $user is not in /etc/passwd: no kubeconfig for it"
		return 0
	fi
	IFS=: read -r uid gid home <<<"$entry"
	install -d -m 0700 -o "$uid" -g "$gid" "$ROOT$home/.kube"
	install -m 0600 -o "$uid" -g "$gid" "$source" "$ROOT$home/.kube/config"
	log "kubeconfig for $user in $home/.kube/config"
}

# sops_age_secret KUBECTL...: the cluster's age key (/root/keys.txt), which
# SOPS-encrypted manifests are decrypted with, as secret flux-system/sops-age
# (key age.agekey), where Flux looks for it. The key goes through a pipe,
# never a command line or the log.
sops_age_secret() {
	local key=$ROOT/root/keys.txt
	if [ ! -s "$key" ]; then
		log "no age key in /root/keys.txt: secret sops-age not created"
		return 0
	fi
	"$@" create namespace flux-system --dry-run=client --output=yaml |
		"$@" apply --filename=-
	"$@" --namespace flux-system create secret generic sops-age \
		--from-file=age.agekey="$key" --dry-run=client --output=yaml |
		"$@" apply --filename=-
	log "secret flux-system/sops-age holds the age key"
}

# k3s_config KEY: the value of a one-line `KEY: value` of
# /etc/rancher/k3s/config.yaml, as nodeimg renders it (quotes removed).
k3s_config() {
	awk -v k="$1" 'index($0, k ":") == 1 {
		v = substr($0, length(k) + 2)
		gsub(/^[ \t]+|[ \t]+$|"/, "", v)
		print v
		exit
	}' "$ROOT/etc/rancher/k3s/config.yaml"
}

# require_k3s: the k3s binary at /usr/local/bin/k3s, where the units run it
# from. An image carrying k3s elsewhere on PATH gets a link; an image
# without k3s fails: nodeimg does not download binaries at boot.
require_k3s() {
	local bin=$ROOT/usr/local/bin/k3s found
	[ -x "$bin" ] && return 0
	found=$(command -v k3s) ||
		fail "k3s is not installed in this image: put the k3s binary at /usr/local/bin/k3s in the base image ([base] overlay or provision)"
	mkdir -p "${bin%/*}"
	ln -sfn "$found" "$bin"
	log "linked /usr/local/bin/k3s to $found"
}

# require_token_files: the token files config.yaml names exist.
require_token_files() {
	local key file
	for key in token-file agent-token-file; do
		file=$(k3s_config "$key")
		[ -n "$file" ] || continue
		[ -s "$ROOT$file" ] || fail "$key $file is missing or empty (nodeimg stamp writes it)"
	done
}
