#!/bin/bash
# A model of the tools the role bootstraps run (kubeadm, kubelet, kubectl,
# crictl, helm, k3s, systemctl), installed under each tool's name. It keeps
# the node's files under NODEIMG_ROOT and the API server's objects under
# NODEIMG_CLUSTER (for the first control plane and the k3s init server a
# directory inside the node's own etcd/datastore directory, so that
# `kubeadm reset` loses them as the real one does).
#
# What kubeadm does is modelled on kubernetes/kubernetes
# cmd/kubeadm/app/cmd/init.go and join.go (phase order) and phases/init,
# phases/join, phases/reset (what each phase writes and removes); preflight
# refuses leftovers as the real checks do (FileAvailable--*,
# DirAvailable--var-lib-etcd, Port-10250). k3s after k3s-io/k3s: servers
# join the embedded etcd with the server token, agents with the agent token.
#
# Knobs: NODEIMG_FAIL=POINT makes the tool fail once at POINT (after the
# phase wrote what it writes), NODEIMG_HANG=POINT makes it hang there once;
# POINT is e.g. kubeadm-init:etcd, kubeadm-join:kubelet-start, helm:cilium,
# k3s-server:etcd. One-shot markers live in NODEIMG_MODEL.
set -uo pipefail
R=$NODEIMG_ROOT
C=${NODEIMG_CLUSTER:-$NODEIMG_MODEL/no-cluster}
M=$NODEIMG_MODEL
name=${0##*/}

line=$name
for a in "$@"; do line+=" ${a//$R\//\/}"; done
# The reading end of a pipe records after the writing end has finished.
case " $* " in *" --filename=- "*) stdin=$(cat) ;; *) stdin= ;; esac
printf '%s\n' "$line" >>"$NODEIMG_RECORD"
if [ -e "$R/var/lib/nodeimg/bootstrap.done" ] && [ -z "${NODEIMG_AFTER_DONE_OK:-}" ]; then
	printf 'CALLED AFTER THE DONE FLAG: %s\n' "$line" >>"$NODEIMG_RECORD"
fi

# reachable HOST:PORT: a TCP connection can be made.
reachable() {
	# shellcheck disable=SC2016 # expanded by the inner shell
	timeout 5 bash -c 'exec 3<>"/dev/tcp/${1%:*}/${1##*:}"' _ "$1" 2>/dev/null
}

die() {
	printf '%s\n' "$*" >&2
	exit 1
}

point() {
	local p=$1
	mkdir -p "$M"
	if [ "${NODEIMG_FAIL:-}" = "$p" ] && [ ! -e "$M/failed-$p" ]; then
		: >"$M/failed-$p"
		die "model: injected failure at $p"
	fi
	if [ "${NODEIMG_HANG:-}" = "$p" ] && [ ! -e "$M/hung-$p" ]; then
		: >"$M/hung-$p"
		exec /bin/sleep 300
	fi
}

# Objects: $C/res/NAMESPACE/KIND/NAME (NAMESPACE _ for cluster-wide kinds),
# holding lines `label:KEY=VALUE` and `KEY=VALUE`.
kind_of() {
	local k=${1,,}
	k=${k%%/*}
	case $k in
	nodes | no) k=node ;;
	secrets) k=secret ;;
	configmaps | cm) k=configmap ;;
	pods | po) k=pod ;;
	deployments | deploy) k=deployment ;;
	daemonsets | ds) k=daemonset ;;
	namespaces | ns) k=namespace ;;
	crds | customresourcedefinition | customresourcedefinitions) k=crd ;;
	fluxinstances) k=fluxinstance ;;
	esac
	printf '%s\n' "$k"
}

scope() {
	case $1 in node | namespace | crd) echo _ ;; *) echo "$2" ;; esac
}

obj() {
	local kind=$1 ns=$2 name=$3
	printf '%s/res/%s/%s/%s\n' "$C" "$(scope "$kind" "$ns")" "$kind" "$name"
}

put() {
	local f
	f=$(obj "$1" "$2" "$3")
	mkdir -p "${f%/*}"
	shift 3
	touch "$f"
	for l in "$@"; do grep -qxF "$l" "$f" || printf '%s\n' "$l" >>"$f"; done
}

has() {
	[ -e "$(obj "$1" "$2" "$3")" ]
}

api_up() {
	[ -e "$C/apiserver-up" ] || die "The connection to the server was refused - did you specify the right host or port?"
}

# --- kubectl -------------------------------------------------------------
kubectl_main() {
	local kubeconfig=${KUBECONFIG:-} ns=default selector='' raw='' filename='' dryrun=''
	local args=() fromfiles=()
	while [ $# -gt 0 ]; do
		case $1 in
		--kubeconfig) kubeconfig=$2 && shift ;;
		--kubeconfig=*) kubeconfig=${1#*=} ;;
		--namespace | -n) ns=$2 && shift ;;
		--namespace=*) ns=${1#*=} ;;
		--output | -o) shift ;;
		--selector=*) selector=${1#*=} ;;
		--raw=*) raw=${1#*=} ;;
		--filename=*) filename=${1#*=} ;;
		--dry-run=*) dryrun=1 ;;
		--from-file=*) fromfiles+=("${1#*=}") ;;
		-*) ;;
		*) args+=("$1") ;;
		esac
		shift
	done
	local verb=${args[0]:-}
	if [ "$verb" = create ] && [ -n "$dryrun" ]; then
		case ${args[1]} in
		namespace) printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n' "${args[2]}" ;;
		secret)
			# kubectl create secret generic: --from-file=[KEY=]SOURCE, repeatable.
			local ff
			printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\ndata:\n' \
				"${args[3]}" "$ns"
			for ff in "${fromfiles[@]}"; do
				[ -r "${ff#*=}" ] || die "error: cannot read ${ff#*=}"
				printf '  %s: (data)\n' "${ff%%=*}"
			done
			;;
		esac
		return 0
	fi
	[ -r "$kubeconfig" ] ||
		die "error: no configuration has been provided (kubeconfig ${kubeconfig:-unset})"
	api_up
	case $verb in
	get)
		if [ -n "$raw" ]; then
			echo ok
			return 0
		fi
		local kind
		kind=$(kind_of "${args[1]}")
		if [ -n "${args[2]:-}" ]; then
			has "$kind" "$ns" "${args[2]}" || die "Error from server (NotFound): $kind \"${args[2]}\" not found"
			printf '%s/%s\n' "$kind" "${args[2]}"
		else
			local d f key
			d=$(obj "$kind" "$ns" x)
			d=${d%/x}
			key=${selector%%=*}
			for f in "$d"/*; do
				[ -e "$f" ] || continue
				if [ -z "$selector" ] || grep -qx "label:$key=${selector#*=}" "$f" ||
					{ [ "$key" = "$selector" ] && grep -q "^label:$key=" "$f"; }; then
					printf '%s/%s\n' "$kind" "${f##*/}"
				fi
			done
		fi
		;;
	apply)
		case $filename in
		https://github.com/kubernetes-sigs/gateway-api/releases/download/*/standard-install.yaml)
			point kubectl:gateway-api
			local crd
			for crd in gatewayclasses gateways httproutes grpcroutes referencegrants; do
				put crd _ "$crd.gateway.networking.k8s.io"
			done
			return 0
			;;
		https://*) die "error: unable to read URL \"$filename\" (the model knows only the Gateway API release)" ;;
		esac
		local text=$stdin
		[ "$filename" = - ] || text=$(cat "$filename") || die "error: cannot read $filename"
		local kind name namespace
		kind=$(printf '%s\n' "$text" | sed -n 's/^kind: *//p' | head -n 1)
		name=$(printf '%s\n' "$text" | sed -n 's/^  name: *//p' | head -n 1)
		namespace=$(printf '%s\n' "$text" | sed -n 's/^  namespace: *//p' | head -n 1)
		kind=$(kind_of "$kind")
		[ "$kind" = fluxinstance ] && ! has crd _ fluxinstances.fluxcd.controlplane.io &&
			die 'error: resource mapping not found for kind "FluxInstance": ensure CRDs are installed first'
		[ "$(scope "$kind" x)" = _ ] || [ -z "$namespace" ] || has namespace _ "$namespace" ||
			die "Error from server (NotFound): namespaces \"$namespace\" not found"
		# A secret keeps the names of its data keys (never the values).
		local keys=()
		[ "$kind" = secret ] &&
			mapfile -t keys < <(printf '%s\n' "$text" | sed -n 's/^  \([^ :]*\): (data)$/key:\1/p')
		put "$kind" "${namespace:-$ns}" "$name" "${keys[@]}"
		echo "$kind/$name configured"
		;;
	rollout)
		has daemonset "$ns" "${args[2]#*/}" || die "Error from server (NotFound): daemonsets \"${args[2]#*/}\" not found"
		;;
	wait)
		local kind=${args[1]%%/*} nm=${args[1]#*/}
		kind=$(kind_of "$kind")
		has "$kind" "$ns" "$nm" || die "Error from server (NotFound): $kind \"$nm\" not found"
		if [ "$kind" = node ]; then
			grep -qx ready=true "$(obj node _ "$nm")" || die "error: timed out waiting for the condition on nodes/$nm"
		fi
		;;
	*) ;;
	esac
}

# --- helm ----------------------------------------------------------------
helm_main() {
	[ "${1:-}" = upgrade ] || return 0
	local release=$3 ns=default a
	for ((a = 1; a <= $#; a++)); do
		[ "${!a}" = --namespace ] && { b=$((a + 1)) && ns=${!b}; }
	done
	[ -r "${KUBECONFIG:-}" ] || die "Error: Kubernetes cluster unreachable: no kubeconfig"
	api_up
	point "helm:$release"
	case $release in
	cilium)
		put daemonset "$ns" cilium
		# Cilium's operator turns its Gateway API support off when the CRDs
		# are missing at its start.
		has crd _ gateways.gateway.networking.k8s.io ||
			put daemonset "$ns" cilium gateway-api=disabled-no-crds
		mkdir -p "$R/etc/cni/net.d"
		echo '{"name":"cilium"}' >"$R/etc/cni/net.d/05-cilium.conflist"
		local f
		for f in "$C"/res/_/node/*; do [ -e "$f" ] && put node _ "${f##*/}" ready=true; done
		;;
	flux-operator)
		put namespace _ flux-system
		put deployment flux-system flux-operator
		put crd _ fluxinstances.fluxcd.controlplane.io
		;;
	esac
}

# --- kubeadm -------------------------------------------------------------
cfg_node() { sed -n 's/^  name: "\(.*\)"$/\1/p' "$1" | head -n 1; }
cfg_token() { sed -n 's/^[ -]*token: "\(.*\)"$/\1/p' "$1" | head -n 1; }
cfg_endpoint() { sed -n 's/^ *apiServerEndpoint: "\(.*\)"$/\1/p' "$1" | head -n 1; }
cfg_hash() { sed -n 's/^ *- "\(sha256:.*\)"$/\1/p' "$1" | head -n 1; }

K=$R/etc/kubernetes

preflight() {
	local errs=()
	[ -z "$(ls -A "$K/manifests" 2>/dev/null)" ] ||
		errs+=("[ERROR FileAvailable--etc-kubernetes-manifests]: /etc/kubernetes/manifests is not empty")
	[ ! -e "$K/kubelet.conf" ] || [ "$1" = init ] ||
		errs+=("[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: /etc/kubernetes/kubelet.conf already exists")
	[ -z "$(ls -A "$R/var/lib/etcd" 2>/dev/null)" ] || [ "$1" = join-worker ] ||
		errs+=("[ERROR DirAvailable--var-lib-etcd]: /var/lib/etcd is not empty")
	[ ! -e "$M/kubelet-running" ] || errs+=("[ERROR Port-10250]: Port 10250 is in use")
	if [ "${#errs[@]}" -ne 0 ]; then
		printf 'error execution phase preflight: [preflight] Some fatal errors occurred:\n' >&2
		printf '\t%s\n' "${errs[@]}" >&2
		exit 1
	fi
}

kubeconfigs() {
	local f
	for f in "$@"; do
		printf 'apiVersion: v1\nkind: Config\n# %s credentials (model)\n' "$f" >"$K/$f.conf"
	done
}

kubeadm_init() {
	local config=$1 node token
	node=$(cfg_node "$config")
	token=$(cfg_token "$config")
	preflight init
	point kubeadm-init:preflight
	mkdir -p "$K/pki/etcd" "$K/manifests"
	# certs: the CAs are used when present, made when not.
	[ -s "$K/pki/ca.crt" ] || echo "CA made by kubeadm (model)" >"$K/pki/ca.crt"
	for f in apiserver.crt apiserver-kubelet-client.crt front-proxy-client.crt etcd/server.crt etcd/peer.crt; do
		echo leaf >"$K/pki/$f"
	done
	point kubeadm-init:certs
	kubeconfigs admin super-admin kubelet controller-manager scheduler
	point kubeadm-init:kubeconfig
	echo etcd >"$K/manifests/etcd.yaml"
	mkdir -p "$R/var/lib/etcd/member" "$C"
	point kubeadm-init:etcd
	for f in kube-apiserver kube-controller-manager kube-scheduler; do echo "$f" >"$K/manifests/$f.yaml"; done
	point kubeadm-init:control-plane
	mkdir -p "$R/var/lib/kubelet"
	echo kubelet >"$R/var/lib/kubelet/config.yaml"
	: >"$M/kubelet-running"
	point kubeadm-init:kubelet-start
	: >"$C/apiserver-up"
	put node _ "$node" ready=false
	put pod kube-system "etcd-$node"
	point kubeadm-init:wait-control-plane
	put configmap kube-system kubeadm-config
	put configmap kube-system kubelet-config
	point kubeadm-init:upload-config
	point kubeadm-init:upload-certs
	put node _ "$node" label:node-role.kubernetes.io/control-plane=
	point kubeadm-init:mark-control-plane
	[ -n "$token" ] && put secret kube-system "bootstrap-token-${token%%.*}" "secret=${token#*.}"
	put configmap kube-public cluster-info
	point kubeadm-init:bootstrap-token
	mkdir -p "$R/var/lib/kubelet/pki"
	echo cert >"$R/var/lib/kubelet/pki/kubelet-client-current.pem"
	printf 'client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n' >>"$K/kubelet.conf"
	point kubeadm-init:kubelet-finalize
	put deployment kube-system coredns
	grep -q 'addon/kube-proxy' "$config" || put daemonset kube-system kube-proxy
	point kubeadm-init:addon
	echo "Your Kubernetes control-plane has initialized successfully!"
}

kubeadm_join() {
	local config=$1 node token endpoint cp=''
	node=$(cfg_node "$config")
	token=$(cfg_token "$config")
	endpoint=$(cfg_endpoint "$config")
	grep -q '^controlPlane:' "$config" && cp=1
	preflight "join-${cp:+cp}${cp:-worker}"
	# Discovery: the endpoint answers, cluster-info is there, the token
	# signs it, and the CA is the one the hash pins.
	reachable "$endpoint" ||
		die "error execution phase preflight: couldn't validate the identity of the API Server: dial tcp $endpoint: connect: connection refused"
	api_up
	has configmap kube-public cluster-info ||
		die "error execution phase preflight: configmaps \"cluster-info\" is forbidden"
	grep -qxF "secret=${token#*.}" "$(obj secret kube-system "bootstrap-token-${token%%.*}")" 2>/dev/null ||
		die "error execution phase preflight: couldn't validate the identity of the API Server: token id \"${token%%.*}\" is invalid for this cluster or it has expired"
	[ "$(cfg_hash "$config")" = "$(cat "$C/ca-hash")" ] ||
		die "error execution phase preflight: cluster CA found in cluster-info ConfigMap is invalid: none of the public keys match the pinned hashes"
	point kubeadm-join:preflight
	mkdir -p "$K/manifests" "$K/pki/etcd"
	if [ -n "$cp" ]; then
		[ -s "$K/pki/ca.key" ] || die "error execution phase control-plane-prepare/certs: couldn't load certificate authority"
		echo leaf >"$K/pki/apiserver.crt"
		kubeconfigs admin super-admin controller-manager scheduler
		for f in kube-apiserver kube-controller-manager kube-scheduler; do echo "$f" >"$K/manifests/$f.yaml"; done
		point kubeadm-join:control-plane-prepare
	fi
	kubeconfigs bootstrap-kubelet
	mkdir -p "$R/var/lib/kubelet"
	echo kubelet >"$R/var/lib/kubelet/config.yaml"
	: >"$M/kubelet-running"
	kubeconfigs kubelet
	rm -f "$K/bootstrap-kubelet.conf"
	put node _ "$node" ready=false
	[ ! -e "$C/res/kube-system/daemonset/cilium" ] || put node _ "$node" ready=true
	point kubeadm-join:kubelet-start
	if [ -n "$cp" ]; then
		mkdir -p "$C/etcd-members" "$R/var/lib/etcd/member"
		: >"$C/etcd-members/$node"
		echo etcd >"$K/manifests/etcd.yaml"
		put pod kube-system "etcd-$node"
		point kubeadm-join:etcd
		put node _ "$node" label:node-role.kubernetes.io/control-plane=
		point kubeadm-join:mark-control-plane
	fi
	echo "This node has joined the cluster"
}

kubeadm_reset() {
	local node
	node=$(hostname_of)
	point kubeadm-reset:preflight
	# remove-etcd-member: a joined control plane leaves the etcd cluster.
	if [ -e "$K/manifests/etcd.yaml" ] && [ -d "$C/etcd-members" ]; then
		rm -f "$C/etcd-members/$node" "$(obj pod kube-system "etcd-$node")"
	fi
	# cleanup-node: kubelet stopped, etcd data, manifests, certificates and
	# kubeconfig files removed; CNI configuration, iptables and
	# $HOME/.kube/config are left.
	rm -f "$M/kubelet-running"
	rm -rf "$R/var/lib/etcd" "$R/var/lib/kubelet" "$K/manifests" "$K/pki"
	rm -f "$K"/*.conf
	echo "[reset] Deleted contents of the etc directories"
}

hostname_of() { cat "$R/etc/hostname" 2>/dev/null || echo unknown; }

kubeadm_main() {
	local config=''
	[ "${2:-}" = --config ] && config=$3
	case ${1:-} in
	init) kubeadm_init "$config" ;;
	join) kubeadm_join "$config" ;;
	reset) kubeadm_reset ;;
	*) ;;
	esac
}

# --- k3s -----------------------------------------------------------------
k3s_cfg() {
	awk -v k="$1" 'index($0, k ":") == 1 { v = substr($0, length(k) + 2); gsub(/^[ \t]+|[ \t]+$|"/, "", v); print v; exit }' \
		"$R/etc/rancher/k3s/config.yaml"
}

k3s_server() {
	local node init server token
	node=$(k3s_cfg node-name)
	init=$(k3s_cfg cluster-init)
	server=$(k3s_cfg server)
	token=$(cat "$R$(k3s_cfg token-file)")
	point k3s-server:start
	local db=$R/var/lib/rancher/k3s/server/db
	if [ "$init" = true ]; then
		mkdir -p "$db" "$C/etcd-members"
		if [ ! -e "$C/k3s-token" ]; then
			printf '%s' "$token" >"$C/k3s-token"
			cat "$R$(k3s_cfg agent-token-file)" >"$C/k3s-agent-token"
		fi
		[ "$token" = "$(cat "$C/k3s-token")" ] || die "level=fatal msg=\"bootstrap data already found and encrypted with different token\""
	else
		local hp=${server#https://}
		reachable "$hp" ||
			die "level=fatal msg=\"failed to get CA certs: connection refused\""
		[ "$token" = "$(cat "$C/k3s-token")" ] || die "level=fatal msg=\"token CA hash does not match the Cluster CA certificate hash\""
		if [ -d "$db" ] && [ ! -e "$C/etcd-members/$node" ]; then
			die "level=fatal msg=\"ETCD join failed: member has already been bootstrapped; remove $db to rejoin\""
		fi
		mkdir -p "$db"
		point k3s-server:etcd
	fi
	: >"$C/etcd-members/$node"
	: >"$C/apiserver-up"
	mkdir -p "$R/etc/rancher/k3s"
	echo "k3s admin (model)" >"$R/etc/rancher/k3s/k3s.yaml"
	point k3s-server:register
	put node _ "$node" ready=true label:node-role.kubernetes.io/etcd=true label:node-role.kubernetes.io/control-plane=true
}

k3s_agent() {
	local node server token
	node=$(k3s_cfg node-name)
	server=$(k3s_cfg server)
	token=$(cat "$R$(k3s_cfg token-file)")
	local hp=${server#https://}
	reachable "$hp" ||
		die "level=error msg=\"failed to get CA certs: connection refused\""
	[ "$token" = "$(cat "$C/k3s-agent-token")" ] || [ "$token" = "$(cat "$C/k3s-token")" ] ||
		die "level=fatal msg=\"token is not valid\""
	point k3s-agent:start
	mkdir -p "$R/var/lib/rancher/k3s/agent"
	echo "kubelet (model)" >"$R/var/lib/rancher/k3s/agent/kubelet.kubeconfig"
	point k3s-agent:register
	put node _ "$node" ready=true
}

k3s_main() {
	case ${1:-} in
	kubectl)
		shift
		KUBECONFIG=${KUBECONFIG:-$R/etc/rancher/k3s/k3s.yaml} kubectl_main "$@"
		;;
	server) k3s_server ;;
	agent) k3s_agent ;;
	*) ;;
	esac
}

# --- systemctl -----------------------------------------------------------
unit_start() {
	local unit=$1
	mkdir -p "$M/active"
	[ -e "$M/active/$unit" ] && return 0
	case $unit in
	k3s.service) (k3s_server) || die "Job for k3s.service failed because the control process exited with error code." ;;
	k3s-agent.service) (k3s_agent) || die "Job for k3s-agent.service failed because the control process exited with error code." ;;
	*) ;;
	esac
	: >"$M/active/$unit"
}

systemctl_main() {
	local now='' quiet='' args=()
	for a in "$@"; do
		case $a in
		--now) now=1 ;;
		--quiet) quiet=1 ;;
		-*) ;;
		*) args+=("$a") ;;
		esac
	done
	local verb=${args[0]:-} unit=${args[1]:-}
	case $verb in
	enable)
		mkdir -p "$M/enabled"
		: >"$M/enabled/$unit"
		[ -z "$now" ] || unit_start "$unit"
		;;
	start) unit_start "$unit" ;;
	restart)
		rm -f "$M/active/$unit"
		unit_start "$unit"
		;;
	stop) rm -f "$M/active/$unit" ;;
	is-active)
		if [ -e "$M/active/$unit" ]; then
			[ -n "$quiet" ] || echo active
		else
			[ -n "$quiet" ] || echo inactive
			exit 3
		fi
		;;
	*) ;;
	esac
}

case $name in
kubectl) kubectl_main "$@" ;;
helm) helm_main "$@" ;;
kubeadm) kubeadm_main "$@" ;;
k3s) k3s_main "$@" ;;
systemctl) systemctl_main "$@" ;;
timedatectl) echo yes ;;
ip)
	case ${1:-} in
	route) echo "default via 192.168.1.1 dev eth0" ;;
	*)
		echo "2: eth0    inet 192.168.1.10/24 brd 192.168.1.255 scope global eth0"
		echo "2: eth0    inet 192.168.1.11/24 brd 192.168.1.255 scope global secondary eth0"
		echo "2: eth0    inet 192.168.1.50/24 brd 192.168.1.255 scope global secondary eth0"
		echo "2: eth0    inet 192.168.1.51/24 brd 192.168.1.255 scope global secondary eth0"
		;;
	esac
	;;
*) ;; # kubelet, crictl, crio, iptables, ipvsadm: recorded only
esac
