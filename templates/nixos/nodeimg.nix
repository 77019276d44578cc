# nodeimg.nix: one NixOS sd-image for every node of a k3s cluster.
#
# Import this module once into the flake that builds the base image:
#
#   nixosConfigurations.base = nixpkgs.lib.nixosSystem {
#     system = "aarch64-linux";
#     modules = [
#       "${nixpkgs}/nixos/modules/installer/sd-card/sd-image-aarch64.nix"
#       ./nodeimg.nix
#       { services.nodeimg.enable = true; }
#     ];
#   };
#
# `nodeimg stamp` then writes each node's identity into a delta of that one
# image, and this module reads it at boot (nothing is decided at build time):
#
#   /var/lib/nodeimg/hostname              the hostname (set at boot, see below)
#   /var/lib/nodeimg/role                  init | server | agent | none
#   /var/lib/nodeimg/server-url            https://INIT:6443 (server, agent)
#   /var/lib/nodeimg/address               the node's IP address; empty: DHCP
#   /var/lib/nodeimg/k3s-token             k3s server token (0600)
#   /var/lib/nodeimg/k3s-agent-token       k3s agent token (0600)
#   /var/lib/nodeimg/cluster.nix           the cluster's nodes (for flakes)
#   /var/lib/nodeimg/authorized_keys/USER  SSH public keys of USER
#   /var/lib/sops-nix/key.txt              the cluster's age key (sops-nix)
#   /var/lib/nodeimg/network/*.network     the node's static address, gateway
#                                          and DNS (systemd-networkd); none: DHCP
#   /var/lib/nodeimg/hosts                 every node's name and address
#                                          ([cluster] hosts = true)
#   /etc/localtime                         the node's time zone (time.timeZone
#                                          must stay null, its default)
#   /usr/local/lib/nodeimg/firstboot.sh, bootstrap-lib.sh, and
#   /etc/nodeimg/firstboot.list          the first-boot check and what it
#                                          checks (nodeimg-firstboot below)
#   /etc/rancher/k3s/config.yaml.d/10-nodeimg.yaml
#                                          pod/service CIDRs, tls-san (k3s reads
#                                          it beside its flags)
#
# The hostname: NixOS writes /etc/hostname from networking.hostName and sets
# it during activation. The module leaves networking.hostName as the flake
# sets it (the seeds set one per node; the default is "nixos") and sets the
# stamped name as the running host name at boot, before the network starts,
# so DHCP, mDNS and k3s (--node-name) see the node's own name.
#
# The seeds' configuration reads the k3s token from /etc/k3s/token
# (services.k3s.tokenFile); that path is a link to the stamped token here.
# services.k3s itself must stay off: this module runs k3s (asserted).
#
# The k3s role follows the role file: `init` starts the first server with
# --cluster-init, `server` joins the server at server-url, `agent` joins it
# as a worker with the agent token (or the server token when there is no
# agent token), `none` (or no token file) starts no k3s.
{ config, lib, pkgs, options, ... }:

let
  cfg = config.services.nodeimg;
  state = "/var/lib/nodeimg";
  k3sData = "/var/lib/rancher/k3s";

  # Reads the stamped role at boot and becomes the matching k3s process
  # (exec, so systemd's notify protocol reaches k3s itself). The unit
  # restarts it forever; each start is reported (docs/firstboot.md). A
  # joining server whose last start never became ready (no k3s-ready mark,
  # written by ExecStartPost once k3s notified READY) may have left a
  # half-joined etcd datastore that makes every later start fail: it is
  # removed before the next try (TLS material and tokens stay).
  k3sStart = pkgs.writeShellScript "nodeimg-k3s" ''
    set -euo pipefail
    role=$(cat ${state}/role)
    attempt=$(( $(cat ${state}/k3s-attempt 2>/dev/null || echo 0) + 1 ))
    echo "$attempt" >${state}/k3s-attempt
    node=$(cat /etc/hostname 2>/dev/null || echo -)
    line="nodeimg-report: v1 node=''${node:--} unit=nodeimg-k3s status=start step=k3s attempt=$attempt msg=starting k3s as $role"
    echo "$line"
    if [ -w /dev/console ]; then echo "$line" >/dev/console 2>/dev/null || true; fi
    if [ "$role" = server ] && [ ! -e ${state}/k3s-ready ] && [ "$attempt" -gt 1 ] \
      && [ -d ${k3sData}/server/db ]; then
      echo "nodeimg: the last k3s start did not join; removing its etcd data" >&2
      rm -rf ${k3sData}/server/db
    fi
    address=$(cat ${state}/address 2>/dev/null || true)
    address=''${address%%/*}
    flags=()
    if [ -n "$address" ]; then
      flags+=(--node-ip "$address")
    fi
    # Called as url=$(server_url): in an assignment a failure stops the
    # script (set -e), in a command's arguments it would not.
    server_url() {
      [ -s ${state}/server-url ] || {
        echo "nodeimg: ${state}/server-url is missing for role $role" >&2
        exit 1
      }
      cat ${state}/server-url
    }
    case "$role" in
      init)
        if [ -s ${state}/k3s-agent-token ]; then
          flags+=(--agent-token-file ${state}/k3s-agent-token)
        fi
        exec ${cfg.k3s.package}/bin/k3s server --cluster-init \
          --token-file ${state}/k3s-token "''${flags[@]}" ${lib.escapeShellArgs cfg.k3s.extraFlags}
        ;;
      server)
        if [ -s ${state}/k3s-agent-token ]; then
          flags+=(--agent-token-file ${state}/k3s-agent-token)
        fi
        url=$(server_url)
        exec ${cfg.k3s.package}/bin/k3s server --server "$url" \
          --token-file ${state}/k3s-token "''${flags[@]}" ${lib.escapeShellArgs cfg.k3s.extraFlags}
        ;;
      agent)
        token=${state}/k3s-agent-token
        [ -s "$token" ] || token=${state}/k3s-token
        url=$(server_url)
        exec ${cfg.k3s.package}/bin/k3s agent --server "$url" \
          --token-file "$token" "''${flags[@]}" ${lib.escapeShellArgs cfg.k3s.extraFlags}
        ;;
      *)
        echo "nodeimg: unknown role '$role' in ${state}/role" >&2
        exit 1
        ;;
    esac
  '';
in
{
  options.services.nodeimg = {
    enable = lib.mkEnableOption "node identity, SSH keys and the k3s role from the files nodeimg stamps";

    mdns = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = "Resolve and announce NAME.local names (Avahi with nss-mdns), so an api_endpoint such as node1.local:6443 resolves.";
    };

    k3s = {
      enable = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = "Run k3s in the role stamped in ${state}/role.";
      };
      package = lib.mkPackageOption pkgs "k3s" { };
      extraFlags = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        example = [ "--disable=traefik" ];
        description = "Further k3s flags, for every role.";
      };
    };
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [
    {
      # Keys are read at login time from the stamped files (keyFiles would
      # be read at build time, the same for every node).
      services.openssh.authorizedKeysFiles = [ "${state}/authorized_keys/%u" ];

      systemd.tmpfiles.rules = [ "d ${state} 0755 root root - -" ];
    }

    # ---- nodeimg identity and network (hostname, address, DNS, time zone,
    # ---- /etc/hosts, mDNS, token path, assertions) ----
    {
      # The stamped host name, set as the running host name before the
      # network comes up (activation has set networking.hostName by then).
      systemd.services.nodeimg-hostname = {
        description = "Host name nodeimg stamped";
        wantedBy = [ "sysinit.target" ];
        before = [ "network-pre.target" "systemd-networkd.service" "avahi-daemon.service" ];
        wants = [ "network-pre.target" ];
        unitConfig = {
          DefaultDependencies = false;
          ConditionFileNotEmpty = "${state}/hostname";
        };
        serviceConfig.Type = "oneshot";
        script = ''
          name=$(head -n1 ${state}/hostname)
          [ -n "$name" ] && echo "$name" > /proc/sys/kernel/hostname
        '';
      };

      # The static address: systemd-networkd reads the stamped .network
      # files from /run/systemd/network (copied at boot: one image, one
      # address per card). Without them the interfaces use DHCP.
      networking.useNetworkd = lib.mkDefault true;
      systemd.network.enable = true;
      services.resolved.enable = lib.mkDefault true;
      systemd.services.nodeimg-network = {
        description = "Static address nodeimg stamped";
        wantedBy = [ "systemd-networkd.service" ];
        before = [ "systemd-networkd.service" ];
        unitConfig = {
          DefaultDependencies = false;
          ConditionDirectoryNotEmpty = "${state}/network";
        };
        serviceConfig.Type = "oneshot";
        script = ''
          mkdir -p /run/systemd/network
          cp ${state}/network/*.network /run/systemd/network/
          chmod 0644 /run/systemd/network/*.network
        '';
      };

      # [cluster] hosts = true: every node's name and address in /etc/hosts
      # (a copy rather than a link to the store, so the stamped lines can be
      # added at boot).
      environment.etc.hosts.mode = "0644";
      systemd.services.nodeimg-hosts = {
        description = "Cluster nodes in /etc/hosts";
        wantedBy = [ "sysinit.target" ];
        before = [ "network-pre.target" ];
        unitConfig = {
          DefaultDependencies = false;
          ConditionFileNotEmpty = "${state}/hosts";
        };
        serviceConfig.Type = "oneshot";
        script = ''
          grep -qxF '# nodeimg cluster nodes' /etc/hosts || {
            echo '# nodeimg cluster nodes'
            cat ${state}/hosts
          } >> /etc/hosts
        '';
      };

      # The seeds' token path, pointing at the stamped token.
      systemd.tmpfiles.rules = [ "L+ /etc/k3s/token - - - - ${state}/k3s-token" ];

      assertions = [
        {
          assertion = !(config.services.k3s.enable or false);
          message = "services.nodeimg runs k3s in the stamped role; disable services.k3s (its token and server URL would start a second, separate k3s).";
        }
        {
          assertion = config.time.timeZone == null;
          message = "services.nodeimg: nodeimg stamps /etc/localtime per node; leave time.timeZone null.";
        }
        {
          assertion = config.systemd.network.enable;
          message = "services.nodeimg: the stamped address is a systemd-networkd file; keep systemd.network.enable.";
        }
      ];
    }

    # The first-boot check (docs/firstboot.md), as on Debian nodes: stamp
    # writes the same script, its library and the list of what to check at
    # the same paths (/usr/local/lib/nodeimg, /etc/nodeimg/firstboot.list:
    # paths NixOS leaves alone). NixOS has no /bin/bash, so the unit runs
    # the script with the store's bash and the tools it calls on its PATH.
    # It runs at each boot once the stamped host name is set, and does not
    # wait for k3s; `nodeimg boot` reads its report line on the console.
    {
      systemd.services.nodeimg-firstboot = {
        description = "nodeimg first-boot check";
        wantedBy = [ "multi-user.target" ];
        after = [ "local-fs.target" "network.target" "nodeimg-hostname.service" ];
        # What the script calls: cat, stat, head, sleep; ping; ip; awk; grep.
        path = [ pkgs.coreutils pkgs.iputils pkgs.iproute2 pkgs.gawk pkgs.gnugrep ];
        unitConfig.ConditionPathExists = [ "/usr/local/lib/nodeimg/firstboot.sh" "/etc/nodeimg/firstboot.list" ];
        serviceConfig = {
          Type = "oneshot";
          ExecStart = "${pkgs.bash}/bin/bash /usr/local/lib/nodeimg/firstboot.sh";
          SyslogIdentifier = "nodeimg-firstboot";
        };
      };
    }

    (lib.mkIf cfg.mdns {
      services.avahi = {
        enable = true;
        nssmdns4 = true;
        publish = {
          enable = true;
          addresses = true;
        };
      };
      networking.firewall.allowedUDPPorts = [ 5353 ];
    })
    # ---- end of nodeimg identity and network ----

    # sops-nix, when the flake uses it: decrypt with the stamped age key.
    (lib.optionalAttrs (options ? sops) {
      sops.age.keyFile = "/var/lib/sops-nix/key.txt";
    })

    (lib.mkIf cfg.k3s.enable {
      environment.systemPackages = [ cfg.k3s.package ];
      boot.kernelModules = [ "br_netfilter" "overlay" ];

      # The role is known only at boot: open what any role needs (API,
      # kubelet, embedded etcd, flannel VXLAN).
      networking.firewall.allowedTCPPorts = [ 6443 10250 2379 2380 ];
      networking.firewall.allowedUDPPorts = [ 8472 ];

      systemd.services.nodeimg-k3s = {
        description = "k3s in the role nodeimg stamped";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];
        unitConfig = {
          ConditionPathExists = [ "${state}/role" "${state}/k3s-token" ];
          # Never give up: no start limit stops the restarts.
          StartLimitIntervalSec = 0;
        };
        serviceConfig = {
          Type = "notify";
          ExecStart = k3sStart;
          ExecStartPost = "${pkgs.coreutils}/bin/touch ${state}/k3s-ready";
          KillMode = "process";
          Delegate = "yes";
          Restart = "always";
          RestartSec = "5s";
          LimitNOFILE = 1048576;
          LimitNPROC = "infinity";
          LimitCORE = "infinity";
          TasksMax = "infinity";
          TimeoutStartSec = 0;
        };
      };
    })
  ]);
}
