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

# fail MESSAGE...: ends this attempt; bootstrap reports MESSAGE in the
# attempt's fail line and tries again.
fail() {
	log "error: $*"
	if [ -d "${FAIL_FILE%/*}" ]; then
		printf '%s\n' "$*" >"$FAIL_FILE"
	else
		report fail "${current_step:--}" "$*"
	fi
	exit 1
}

# step NAME MESSAGE...: logs and reports the start of a named step.
step() {
	current_step=$1
	shift
	if [ -d "$STATE_DIR" ]; then
		printf '%s\n' "$current_step" >"$STATE_DIR/bootstrap.step"
	fi
	log "$*"
	report step "$current_step" "$*"
}

# Waits and retries sleep through NODEIMG_SLEEP (unset on a real node; the
# tests set it to `true` so that backoff costs nothing), and the long
# kubeadm commands are bounded by NODEIMG_STEP_TIMEOUT (default 30m), so a
# hung step is ended and retried like a failed one.
SLEEP=${NODEIMG_SLEEP:-sleep}
STEP_TIMEOUT=${NODEIMG_STEP_TIMEOUT:-30m}
STATE_DIR=$ROOT/var/lib/nodeimg
ATTEMPT_FILE=$STATE_DIR/bootstrap.attempt
FAIL_FILE=$STATE_DIR/bootstrap.failure

# backoff N FIRST CAP: the delay before try N+1, FIRST*2^(N-1) seconds,
# at most CAP.
backoff() {
	local n=$1 delay=$2 cap=$3
	while [ "$n" -gt 1 ] && [ "$delay" -lt "$cap" ]; do
		delay=$((delay * 2))
		n=$((n - 1))
	done
	[ "$delay" -le "$cap" ] || delay=$cap
	printf '%s\n' "$delay"
}

# bootstrap MAIN: runs MAIN, logged to the journal (stdout) and LOG_FILE,
# until it succeeds: a failed attempt is reported (status=fail) and run
# again after a capped exponential backoff (10 s doubling to 10 min), for
# as long as the node is up. MAIN runs in a subshell with errexit, so any
# failing command ends the attempt, never the loop. Only when MAIN
# succeeds is the done-flag written; with the flag present nothing runs.
# The attempt count survives restarts of the unit.
bootstrap() {
	local rc delay n
	if [ -e "$DONE_FLAG" ]; then
		log "already bootstrapped ($DONE_FLAG exists); nothing to do"
		return 0
	fi
	mkdir -p "${LOG_FILE%/*}" "$STATE_DIR"
	n=0
	while :; do
		report_attempt=$(($(cat "$ATTEMPT_FILE" 2>/dev/null || echo 0) + 1))
		echo "$report_attempt" >"$ATTEMPT_FILE"
		n=$((n + 1))
		rm -f "$FAIL_FILE"
		report start - "bootstrap started" | tee -a "$LOG_FILE"
		set +e
		(
			set -e
			"$@"
		) 2>&1 | tee -a "$LOG_FILE"
		rc=${PIPESTATUS[0]}
		set -e
		if [ "$rc" -eq 0 ]; then
			break
		fi
		report fail "$(cat "$STATE_DIR/bootstrap.step" 2>/dev/null || echo -)" \
			"$(cat "$FAIL_FILE" 2>/dev/null || echo "a command failed (status $rc)")" |
			tee -a "$LOG_FILE"
		# Only the tests set NODEIMG_MAX_ATTEMPTS (one run of the script
		# then stands for one start of the unit); a node never gives up.
		if [ -n "${NODEIMG_MAX_ATTEMPTS:-}" ] && [ "$n" -ge "$NODEIMG_MAX_ATTEMPTS" ]; then
			return 1
		fi
		delay=$(backoff "$n" 10 600)
		{
			log "attempt $report_attempt failed; next attempt in ${delay}s"
			report wait - "next attempt in ${delay}s"
		} | tee -a "$LOG_FILE"
		$SLEEP "$delay"
	done
	date -u +%Y-%m-%dT%H:%M:%SZ >"$DONE_FLAG"
	rm -f "$FAIL_FILE" "$STATE_DIR/bootstrap.step"
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
			$SLEEP "$delay"
		fi
	done
	return 1
}

# wait_for WHAT CMD...: runs CMD until it succeeds, for as long as it
# takes, reporting each wait (status=wait) with a capped backoff (5 s
# doubling to 1 min). For what only the outside world can change: the
# network, the first control plane, the API server.
wait_for() {
	local what=$1 n=0 delay
	shift
	until "$@"; do
		n=$((n + 1))
		delay=$(backoff "$n" 5 60)
		log "waiting for $what (next check in ${delay}s)"
		report wait "${current_step:--}" "waiting for $what"
		$SLEEP "$delay"
	done
}

# wait_up_to SECONDS WHAT CMD...: wait_for, but gives up (status 1) once
# the waits add up to SECONDS: for what this node itself should bring
# about, where a long wait means the step has to be cleaned up and run
# again.
wait_up_to() {
	local limit=$1 what=$2 n=0 waited=0 delay
	shift 2
	until "$@"; do
		[ "$waited" -lt "$limit" ] || return 1
		n=$((n + 1))
		delay=$(backoff "$n" 5 60)
		log "waiting for $what (next check in ${delay}s)"
		report wait "${current_step:--}" "waiting for $what"
		$SLEEP "$delay"
		waited=$((waited + delay))
	done
}

# bounded CMD...: CMD, ended (and failing) when it runs longer than
# STEP_TIMEOUT; kubeadm's own waits can hang on a slow card.
bounded() {
	timeout --kill-after=60 "$STEP_TIMEOUT" "$@"
}

# tcp_open HOST PORT: a TCP connection can be made.
tcp_open() {
	# shellcheck disable=SC2016 # expanded by the inner shell
	timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# wait_for_endpoint HOST PORT: waits (forever) for a TCP connection to a
# server that may still be booting (the first control plane, the k3s server).
wait_for_endpoint() {
	wait_for "the server at $1:$2" tcp_open "$1" "$2"
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

# What kubeadm writes, phase by phase (kubernetes/kubernetes,
# cmd/kubeadm/app/cmd/init.go and phases/init/: preflight, certs,
# kubeconfig — admin.conf and kubelet.conf already here —, etcd,
# control-plane, kubelet-start, wait-control-plane, upload-config,
# upload-certs, mark-control-plane, bootstrap-token — the join token and
# kube-public/cluster-info —, kubelet-finalize, addon; join.go and
# phases/join/: preflight, control-plane-prepare, kubelet-start —
# kubelet.conf —, control-plane-join — the etcd member, then the
# control-plane label). So no single file says a step is finished: the
# *_done checks below ask the API server, with this node's credentials.
KUBE=$ROOT/etc/kubernetes

# kc KUBECONFIG ARGS...: kubectl with those credentials, quiet.
kc() {
	local config=$1
	shift
	[ -s "$config" ] && kubectl --kubeconfig "$config" "$@" >/dev/null 2>&1
}

# api_ready KUBECONFIG: the API server answers /readyz to these credentials.
api_ready() {
	kc "$1" get --raw=/readyz
}

# node_registered KUBECONFIG NODE: the Node object exists.
node_registered() {
	kc "$1" get node "$2"
}

# labelled KUBECONFIG NODE LABEL: the node carries LABEL.
labelled() {
	[ -s "$1" ] && kubectl --kubeconfig "$1" get nodes --selector="$3" --output=name 2>/dev/null |
		grep -qxF "node/$2"
}

# token_id CONFIG: the public half (id) of the bootstrap token in a kubeadm
# configuration; the secret half is never printed.
token_id() {
	sed -n 's/^[ -]*token: "\([a-z0-9]\{6\}\)\..*/\1/p' "$1" 2>/dev/null | head -n 1
}

# kubeadm_leftovers: files a previous, unfinished kubeadm init or join left,
# which make its preflight fail (static pod manifests, kubelet.conf, the
# etcd data directory, the kubelet's configuration).
kubeadm_leftovers() {
	[ -n "$(ls -A "$KUBE/manifests" 2>/dev/null)" ] ||
		[ -e "$KUBE/kubelet.conf" ] || [ -e "$KUBE/bootstrap-kubelet.conf" ] ||
		[ -e "$KUBE/admin.conf" ] ||
		[ -n "$(ls -A "$ROOT/var/lib/etcd" 2>/dev/null)" ] ||
		[ -e "$ROOT/var/lib/kubelet/config.yaml" ]
}

# kubeadm_reset USER: undoes a half-done kubeadm init or join so that the
# next one passes preflight: `kubeadm reset -f`, then what reset leaves
# behind by design (kubeadm reset reference, "kubeadm reset" page of
# kubernetes.io: the CNI configuration in /etc/cni/net.d, iptables and
# IPVS rules, the kubeconfig files in $HOME/.kube). Reset also deletes the
# certificate directory, CAs included; the cluster CA material nodeimg
# stamped is kept aside and put back, or the next init would make a CA
# that no node pins.
kubeadm_reset() {
	local user=$1 keep=$STATE_DIR/pki-keep f home
	step reset "cleaning up an unfinished kubeadm run (kubeadm reset)"
	rm -rf "$keep"
	(umask 077 && mkdir -p "$keep/etcd")
	for f in ca.crt ca.key sa.key sa.pub front-proxy-ca.crt front-proxy-ca.key etcd/ca.crt etcd/ca.key; do
		[ -e "$PKI/$f" ] && cp -p "$PKI/$f" "$keep/$f"
	done
	bounded kubeadm reset -f
	rm -rf "$ROOT/etc/cni/net.d"
	mkdir -p "$ROOT/etc/cni/net.d"
	if command -v iptables >/dev/null 2>&1; then
		if ! { iptables -F && iptables -t nat -F && iptables -t mangle -F && iptables -X; }; then
			log "warning: iptables rules not flushed"
		fi
	fi
	if command -v ipvsadm >/dev/null 2>&1; then
		ipvsadm --clear || log "warning: IPVS tables not cleared"
	fi
	rm -f "$ROOT/root/.kube/config"
	if [ -n "$user" ]; then
		home=$(awk -F: -v u="$user" '$1 == u { print $6 }' "$ROOT/etc/passwd")
		[ -z "$home" ] || rm -f "$ROOT$home/.kube/config"
	fi
	mkdir -p "$PKI/etcd"
	for f in ca.crt ca.key sa.key sa.pub front-proxy-ca.crt front-proxy-ca.key etcd/ca.crt etcd/ca.key; do
		[ -e "$keep/$f" ] && cp -p "$keep/$f" "$PKI/$f"
	done
	rm -rf "$keep"
	log "kubeadm reset done; cluster CA material kept"
}

# kubeadm_run STEP DONE USER CMD...: unless DONE says the step is
# finished, cleans up what an unfinished run left (kubeadm_reset) and runs
# CMD (bounded); then DONE must hold, or this attempt fails.
kubeadm_run() {
	local name=$1 done=$2 user=$3
	shift 3
	if "$done"; then
		log "$1 $2 already complete"
		return 0
	fi
	if kubeadm_leftovers; then
		# The check may have failed only because the API server was out of
		# reach for a moment (a control plane restarting): give a finished
		# node five minutes to show it before resetting it.
		if wait_up_to 300 "an earlier $1 $2 to show as complete" "$done"; then
			log "$1 $2 already complete"
			return 0
		fi
		kubeadm_reset "$user"
	fi
	step "$name" "$1 $2"
	bounded "$@" || fail "$1 $2 failed or timed out (status $?)"
	"$done" || fail "$1 $2 returned, but the node is not complete yet"
}

# forget_join_secret FILE: once this node has joined (or, on the init node,
# created the token), its copy of the join token goes, so a lost card does
# not carry a way into the cluster.
forget_join_secret() {
	if [ -e "$1" ]; then
		rm -f "$1"
		log "join token removed from this node (${1#"$ROOT"})"
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

# sops_age_secret NAME KUBECTL...: the cluster's age key (/root/keys.txt),
# which SOPS-encrypted manifests are decrypted with, as secret
# flux-system/NAME (key age.agekey), where the GitOps repository's
# Kustomizations look for it ([cluster] sops_secret). The key goes through
# a pipe, never a command line or the log.
sops_age_secret() {
	local key=$ROOT/root/keys.txt name=$1
	shift
	if [ ! -s "$key" ]; then
		log "no age key in /root/keys.txt: secret $name not created"
		return 0
	fi
	"$@" create namespace flux-system --dry-run=client --output=yaml |
		"$@" apply --filename=-
	"$@" --namespace flux-system create secret generic "$name" \
		--from-file=age.agekey="$key" --dry-run=client --output=yaml |
		"$@" apply --filename=-
	log "secret flux-system/$name holds the age key"
}

# flux_git_secret NAME KUBECTL...: the GitOps deploy key stamped in
# /etc/nodeimg as secret flux-system/NAME with the keys Flux's SSH
# authentication reads: identity (private key), identity.pub and
# known_hosts (fluxcd.io/flux/components/source/gitrepositories, "SSH
# authentication"). The FluxInstance names it in sync.pullSecret. The
# private key goes through a pipe, never a command line or the log. The
# key file stays on the node (0600 root): the secret is what Flux uses,
# and a retry or a rebuilt flux-system namespace needs the file again.
flux_git_secret() {
	local dir=$ROOT/etc/nodeimg name=$1 f
	shift
	for f in flux-deploy-key flux-deploy-key.pub flux-known-hosts; do
		[ -s "$dir/$f" ] || fail "the GitOps deploy key needs /etc/nodeimg/$f, which is missing"
	done
	"$@" create namespace flux-system --dry-run=client --output=yaml |
		"$@" apply --filename=-
	"$@" --namespace flux-system create secret generic "$name" \
		--from-file=identity="$dir/flux-deploy-key" \
		--from-file=identity.pub="$dir/flux-deploy-key.pub" \
		--from-file=known_hosts="$dir/flux-known-hosts" \
		--dry-run=client --output=yaml |
		"$@" apply --filename=-
	log "secret flux-system/$name holds the GitOps deploy key"
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
