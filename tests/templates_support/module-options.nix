# Evaluates nodeimg.nix's `config` with a stand-in for nixpkgs' lib (mkIf,
# mkMerge and mkDefault keep their content) and lists every option path it
# sets, checked against a NixOS option list in the shape of options.json
# (`<name>` for the attribute-set-of-submodule levels).
#   nix-instantiate --eval --strict --json -E \
#     'import ./module-options.nix { module = ./nodeimg.nix; options = ./nixos-options.json; }'
# Result: { set = [ options set ]; unknown = [ paths that are no option ];
#          services = { NAME = the systemd.services.NAME it declares; }; }
{ module, options }:
let
  known = (builtins.fromJSON (builtins.readFile options)).options;
  lib = {
    mkIf = cond: content: { _nodeimgIf = cond; inherit content; };
    mkMerge = contents: { _nodeimgMerge = true; inherit contents; };
    mkDefault = v: v;
    mkForce = v: v;
    optionalAttrs = cond: attrs: if cond then attrs else { };
    mkOption = a: a;
    mkEnableOption = d: { };
    mkPackageOption = p: n: a: { };
    types = { bool = null; str = null; listOf = t: null; };
    escapeShellArgs = l: "";
  };
  pkgs = {
    writeShellScript = name: text: "/nix/store/${name}";
    k3s = "/nix/store/k3s";
    bash = "/nix/store/bash";
    coreutils = "/nix/store/coreutils";
    iputils = "/nix/store/iputils";
    iproute2 = "/nix/store/iproute2";
    gawk = "/nix/store/gawk";
    gnugrep = "/nix/store/gnugrep";
  };
  config.services.nodeimg = {
    enable = true;
    mdns = true;
    k3s = { enable = true; package = "/nix/store/k3s"; extraFlags = [ ]; };
  };
  m = import module { inherit lib pkgs config; options = { sops = { }; }; };
  # Levels that are attribute sets of submodules: their names become <name>.
  named = [ "systemd.services" "environment.etc" ];
  walk = path: v:
    let p = builtins.concatStringsSep "." path; in
    if builtins.isAttrs v && v ? _nodeimgIf then (if v._nodeimgIf then walk path v.content else [ ])
    else if builtins.isAttrs v && v ? _nodeimgMerge then builtins.concatMap (walk path) v.contents
    else if known ? ${p} then [ { option = p; } ]
    else if builtins.isAttrs v && builtins.elem p named then
      builtins.concatMap (n: walk (path ++ [ "<name>" ]) v.${n}) (builtins.attrNames v)
    else if builtins.isAttrs v then
      builtins.concatMap (n: walk (path ++ [ n ]) v.${n}) (builtins.attrNames v)
    else [ { unknown = p; } ];
  found = walk [ ] m.config;
  # The systemd services the module declares (every mkIf taken), by name.
  services = v:
    if builtins.isAttrs v && v ? _nodeimgIf then (if v._nodeimgIf then services v.content else { })
    else if builtins.isAttrs v && v ? _nodeimgMerge then
      builtins.foldl' (a: b: a // b) { } (map services v.contents)
    else (v.systemd or { }).services or { };
in
{
  set = map (x: x.option) (builtins.filter (x: x ? option) found);
  unknown = map (x: x.unknown) (builtins.filter (x: x ? unknown) found);
  services = services m.config;
}
