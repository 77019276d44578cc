#!/bin/bash
# Role bootstrap of ${NODE_HOSTNAME}: a k3s server of ${CLUSTER_NAME} (role
# ${NODE_ROLE}). Written by nodeimg stamp, run at first boot by
# nodeimg-bootstrap.service until it succeeds: checks the k3s binary and the
# token files, starts k3s.service (flags in /etc/rancher/k3s/config.yaml:
# --cluster-init on the init server, --server on the others), and counts
# the server as up when this node is registered, an etcd member and Ready;
# on the init server it then stores the age key as secret
# flux-system/${SOPS_SECRET}. A joining server that does not come up is stopped
# and its half-made etcd data removed before the next try.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=bootstrap-lib.sh
. "${NODEIMG_ROOT:-}/usr/local/lib/nodeimg/bootstrap-lib.sh"

node='${NODE_HOSTNAME}'
role='${NODE_ROLE}'
address='${NODE_ADDRESS}'
user='${CLUSTER_USER}'
sops_secret='${SOPS_SECRET}'

main() {
	step check "k3s server ($role) on $node"
	require_k3s
	require_token_files
	step network "waiting for the network"
	if [ "$role" = init ]; then
		wait_for "the address ${address:-of DHCP}" has_address "$address"
	else
		wait_for_url "$(k3s_config server)"
	fi
	wait_for_clock

	step start "starting k3s.service"
	systemctl enable k3s.service
	if ! server_up; then
		# A k3s that exits (Type=notify: the start fails) and one that runs
		# without joining are both cleaned up for the next attempt.
		if ! start_k3s || ! wait_up_to 900 "node $node to register as an etcd member" server_up; then
			k3s_cleanup
			fail "k3s server did not come up on $node; cleaned up for the next attempt"
		fi
	fi
	k3s kubectl wait --for=condition=Ready "node/$node" --timeout=10m
	user_kubeconfig "$user" "$ROOT/etc/rancher/k3s/k3s.yaml"
	if [ "$role" = init ]; then
		step secrets "storing the age key"
		sops_age_secret "$sops_secret" k3s kubectl
	fi
}

# server_up: k3s runs, this node is registered and carries the etcd role
# label k3s gives members of its embedded etcd.
server_up() {
	systemctl is-active --quiet k3s.service &&
		k3s kubectl get node "$node" >/dev/null 2>&1 &&
		k3s kubectl get nodes --selector=node-role.kubernetes.io/etcd=true --output=name 2>/dev/null |
		grep -qxF "node/$node"
}

start_k3s() {
	systemctl is-active --quiet k3s.service || systemctl restart k3s.service
}

# k3s_cleanup: stops k3s; on a joining server also removes the etcd data a
# failed join left, which would make every later start fail (k3s keeps its
# datastore in /var/lib/rancher/k3s/server/db; the TLS material and tokens
# stay). The init server's datastore is the cluster: it is kept.
k3s_cleanup() {
	step cleanup "stopping k3s"
	systemctl stop k3s.service || true
	if [ "$role" != init ]; then
		rm -rf "$ROOT/var/lib/rancher/k3s/server/db"
		log "removed the etcd data of the failed join"
	fi
}

bootstrap main
