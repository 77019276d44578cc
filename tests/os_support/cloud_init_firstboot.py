"""Runs cloud-init's own first-boot modules over a root tree.

Usage: cloud_init_firstboot.py ROOT USER_DATA SSH_DIR

SSH_DIR must be what is mounted on /etc/ssh (checked).

The configuration is assembled as cloud-init assembles it: the system
configuration (ROOT/etc/cloud/cloud.cfg and cloud.cfg.d, read by
cloudinit.util.read_conf_with_confd) with the NoCloud user-data on top
(USER_DATA, "-" for none). ROOT "-" means no system configuration (cloud-init's
built-in defaults). Then cloud-init's modules run with it:

- cc_ssh.handle, for real, against /etc/ssh: the caller runs this in a private
  mount namespace with the tree's /etc/ssh bind-mounted there;
- cc_set_hostname, cc_update_hostname and cc_users_groups with a recording
  stand-in for the distro, which shows what they would change.

Prints one JSON object: what the modules decided.
"""
import json
import logging
import sys
from unittest import mock

try:
    from cloudinit import util
    from cloudinit.config import cc_set_hostname, cc_ssh, cc_update_hostname, cc_users_groups
except ImportError:
    sys.exit("cloud_init_firstboot.py: cloudinit is missing (install the Debian package cloud-init)")

root, user_data = sys.argv[1], sys.argv[2]
# cc_ssh deletes and makes keys in /etc/ssh: refuse unless /etc/ssh is the
# tree's own (bind-mounted in a private namespace), whatever the caller did.
ssh_dir = sys.argv[3]
here, there = __import__("os").stat("/etc/ssh"), __import__("os").stat(ssh_dir)
if (here.st_dev, here.st_ino) != (there.st_dev, there.st_ino):
    sys.exit("cloud_init_firstboot.py: /etc/ssh is not " + ssh_dir + " (run it in a private mount namespace with that directory bind-mounted on /etc/ssh)")
system = util.read_conf_with_confd(root + "/etc/cloud/cloud.cfg") if root != "-" else {}
ud = {}
if user_data != "-":
    with open(user_data, encoding="utf-8") as f:
        ud = util.load_yaml(f.read()) or {}
# cloud-init merges the user-data's cloud-config over the system config.
cfg = util.mergemanydict([ud, system])
log = logging.getLogger("firstboot")
cloud = mock.MagicMock()
cloud.get_public_ssh_keys.return_value = []
# cloud-init's own state (instance data) goes to a scratch directory.
scratch = __import__("tempfile").TemporaryDirectory()
cloud.get_cpath.return_value = scratch.name
cloud.get_ipath_cur.return_value = cloud.get_cpath.return_value
cloud.distro.get_default_user.return_value = None
Hostname = __import__("collections").namedtuple("Hostname", "hostname is_default")
cloud.get_hostname.return_value = Hostname("from-cloud-init", False)

# In the order of cloud.cfg's cloud_init_modules, each with its own copy (the
# modules normalise the users list in place).
copy = __import__("copy").deepcopy
cc_set_hostname.handle("set_hostname", copy(cfg), cloud, log, [])
cc_update_hostname.handle("update_hostname", copy(cfg), cloud, log, [])
cc_users_groups.handle("users_groups", copy(cfg), cloud, log, [])
cc_ssh.handle("ssh", copy(cfg), cloud, log, [])

def calls(name):
    return [
        {"args": [str(a) for a in c.args], "kwargs": {k: v for k, v in c.kwargs.items() if isinstance(v, (str, bool, int))}}
        for c in getattr(cloud.distro, name).call_args_list
    ]


print(json.dumps({
    "ssh_deletekeys": cfg.get("ssh_deletekeys", True),
    "ssh_genkeytypes": util.get_cfg_option_list(cfg, "ssh_genkeytypes", cc_ssh.GENERATE_KEY_NAMES),
    "set_hostname": calls("set_hostname"),
    "update_hostname": calls("update_hostname"),
    "create_user": calls("create_user"),
}))
