#!/bin/bash
# Role bootstrap of ${NODE_HOSTNAME}: a k3s server of ${CLUSTER_NAME} (role
# ${NODE_ROLE}). Written by nodeimg stamp, run once at first boot by
# nodeimg-bootstrap.service: checks the k3s binary and the token files, then
# enables and starts k3s.service (flags in /etc/rancher/k3s/config.yaml:
# --cluster-init on the init server, --server on the others), waits for the
# node to be Ready, and on the init server stores the age key as secret
# flux-system/sops-age.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=bootstrap-lib.sh
. "${NODEIMG_ROOT:-}/usr/local/lib/nodeimg/bootstrap-lib.sh"

node='${NODE_HOSTNAME}'
role='${NODE_ROLE}'
address='${NODE_ADDRESS}'
user='${CLUSTER_USER}'

main() {
	log "k3s server ($role) on $node"
	require_k3s
	require_token_files
	if [ "$role" = init ]; then
		wait_for "the address ${address:-of DHCP}" 60 5 has_address "$address"
	else
		wait_for_url "$(k3s_config server)"
	fi
	wait_for_clock

	systemctl enable --now k3s.service
	wait_for "node $node to register" 60 10 node_known
	k3s kubectl wait --for=condition=Ready "node/$node" --timeout=10m
	user_kubeconfig "$user" "$ROOT/etc/rancher/k3s/k3s.yaml"
	if [ "$role" = init ]; then
		sops_age_secret k3s kubectl
	fi
}

node_known() {
	k3s kubectl get node "$node" >/dev/null 2>&1
}

bootstrap main
