#!/bin/bash
# Role bootstrap of ${NODE_HOSTNAME}: a k3s agent of ${CLUSTER_NAME}. Written
# by nodeimg stamp, run at first boot by nodeimg-bootstrap.service until it
# succeeds: checks the k3s binary and the token file, waits for the server
# (${K3S_URL}), starts k3s-agent.service (flags in
# /etc/rancher/k3s/config.yaml), and counts the agent as joined when its
# kubelet credentials reach the API server and this node is registered.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=bootstrap-lib.sh
. "${NODEIMG_ROOT:-}/usr/local/lib/nodeimg/bootstrap-lib.sh"

node='${NODE_HOSTNAME}'
url='${K3S_URL}'
kubelet_conf=$ROOT/var/lib/rancher/k3s/agent/kubelet.kubeconfig

main() {
	step check "k3s agent on $node, joining $url"
	require_k3s
	require_token_files
	step network "waiting for the server"
	wait_for_url "$url"
	wait_for_clock

	step start "starting k3s-agent.service"
	systemctl enable k3s-agent.service
	if ! agent_up; then
		if ! start_agent || ! wait_up_to 900 "node $node to register" agent_up; then
			systemctl stop k3s-agent.service || true
			fail "k3s agent did not join from $node; stopped for the next attempt"
		fi
	fi
}

start_agent() {
	systemctl is-active --quiet k3s-agent.service || systemctl restart k3s-agent.service
}

# agent_up: k3s-agent runs and its kubelet is registered as this node.
agent_up() {
	systemctl is-active --quiet k3s-agent.service &&
		[ -s "$kubelet_conf" ] &&
		k3s kubectl --kubeconfig "$kubelet_conf" get node "$node" >/dev/null 2>&1
}

bootstrap main
