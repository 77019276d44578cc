#!/bin/bash
# Kubelet serving-certificate approver of ${CLUSTER_NAME}, on its first
# control plane ${NODE_HOSTNAME} (written by nodeimg stamp, run by
# nodeimg-csr-approver.service). Kubelets ask for serving certificates
# (serverTLSBootstrap in the KubeletConfiguration) and the controller
# manager does not approve those (Kubernetes docs, "Kubelet serving
# certificate" / certificate signing requests: signer
# kubernetes.io/kubelet-serving needs an approver). For 24 hours after its
# first start this approves pending kubelet-serving requests made by a
# node of this cluster (requester system:node:NAME, NAME a registered Node),
# every 30 seconds; then it stops for good (time-boxed: a later node's
# request needs `kubectl certificate approve`).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=bootstrap-lib.sh
. "${NODEIMG_ROOT:-}/usr/local/lib/nodeimg/bootstrap-lib.sh"

report_unit=nodeimg-csr-approver
admin=$ROOT/etc/kubernetes/admin.conf
since_file=$ROOT/var/lib/nodeimg/csr-approver.since
done_file=$ROOT/var/lib/nodeimg/csr-approver.done
window=${NODEIMG_CSR_WINDOW:-86400}

mkdir -p "${since_file%/*}"
[ -s "$since_file" ] || date +%s >"$since_file"
since=$(cat "$since_file")

# pending_serving_csrs: NAME USERNAME of every pending kubelet-serving CSR.
pending_serving_csrs() {
	kubectl --kubeconfig "$admin" get csr --output=jsonpath='{range .items[?(@.spec.signerName=="kubernetes.io/kubelet-serving")]}{.metadata.name}{" "}{.spec.username}{" "}{.status.conditions[*].type}{"\n"}{end}' |
		awk 'NF == 2 { print $1, $2 }'
}

approve_round() {
	local name user node
	while read -r name user; do
		node=${user#system:node:}
		if [ "$node" = "$user" ] || [ -z "$node" ]; then
			continue
		fi
		if kubectl --kubeconfig "$admin" get node "$node" >/dev/null 2>&1; then
			kubectl --kubeconfig "$admin" certificate approve "$name" >/dev/null
			log "approved serving certificate request $name of node $node"
		else
			log "not approving $name: $node is not a node of this cluster"
		fi
	done < <(pending_serving_csrs 2>/dev/null || true)
}

report step approve "approving kubelet serving certificates for $((window / 3600)) h"
while [ "$(date +%s)" -lt $((since + window)) ]; do
	if [ -s "$admin" ]; then
		approve_round
	fi
	$SLEEP 30
done
date -u +%Y-%m-%dT%H:%M:%SZ >"$done_file"
report ok - "the approval window has closed"
