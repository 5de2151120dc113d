"""Two ways into ironic-python-agent's real code, in the IPA peer venv:

- ``LoopDiskManager`` (at the end): a test hardware manager for the agent process itself
  (tests/ipa_process.py), which offers a loop device as the install device.
- ``main``: one ``write_image`` deploy step in a process of its own, as the agent would
  run it: oslo config and logging set up the agent's way, hardware managers found
  through their entry points, the extensions loaded, then
  ``DeployExtension.execute_deploy_step`` (which caches the node, checks the managers'
  versions and calls ``hardware.dispatch_to_managers('write_image', ...)``).

    .peers/ipa/bin/python tests/ipa_agent.py CONFIG_FILE < request.json

request.json: {"device", "node", "image_info", "configdrive", "kernel_params"}. Prints one JSON line on
stdout: the command's status, result or error (IPA's serialization), which manager's
write_image returned, and the standby extension's recorded partition UUIDs. The agent's
log goes to stderr.

Stubbed, because this sandbox lacks it (each only where the agent asks the machine):
- the block device list: IPA lists disks with ``lsblk`` and keeps TYPE ``disk`` only, and
  reads serials and WWNs from udev; a loop device is TYPE ``loop`` and there is no udev.
  The loop device is offered as the one disk; root device hints then pick it the real way
  (``get_os_install_device`` -> ``match_root_device_hints``).
- ``udevadm settle``: there is no udev daemon to wait for (IPA calls it between steps).
- the kernel command line: /proc/cmdline here is the sandbox's, not a ramdisk's; the
  request's ``kernel_params`` are added to IPA's own cache of it (``_set_cached_params``)
  before the hardware managers load.
- ``fuser DEVICE`` (IPA's "is the disk free yet" wait): here it cannot read other
  processes' descriptors ("Cannot stat file /proc/1/fd/0: Permission denied") and so
  never reports the disk free.
"""

import json
import sys

from oslo_config import cfg
from oslo_log import log

from ironic_python_agent import config  # noqa: F401  (registers the agent's options)
from ironic_python_agent import disk_utils, hardware, utils
from ironic_python_agent.extensions import base as ext_base

CONF = cfg.CONF


def main() -> None:
    request = json.load(sys.stdin)
    log.register_options(CONF)
    CONF(args=["--config-file", sys.argv[1]], project="ironic-python-agent")
    log.setup(CONF, "ironic-python-agent")
    device = request["device"]
    utils._set_cached_params({**utils.get_agent_params(), **request.get("kernel_params", {})})

    def loop_as_disk(self, include_partitions=False, all_serial_and_wwn=False):
        size = int(utils.execute("blockdev", "--getsize64", device)[0])
        return [hardware.BlockDevice(name=device, model="loop", size=size, rotational=False,
                                     serial="sandbox-loop")]

    hardware.GenericHardwareManager.list_block_devices = loop_as_disk
    hardware.GenericHardwareManager.list_block_devices_check_skip_list = (
        lambda self, node, include_partitions=False, all_serial_and_wwn=False:
        loop_as_disk(self))
    disk_utils.udev_settle = lambda: None
    disk_utils.wait_for_disk_to_become_available = lambda device: None

    called = []
    for manager in hardware.get_managers():
        method = getattr(type(manager), "write_image", None)
        if method is not None:
            def spy(self, *args, _method=method, **kwargs):
                result = _method(self, *args, **kwargs)
                called.append(type(self).__name__)
                return result
            type(manager).write_image = spy

    ext_base.init_ext_manager(agent=None)
    deploy = ext_base.get_extension("deploy")
    step = {"step": "write_image", "interface": "deploy", "priority": 80, "args": {}}
    command = deploy.execute_deploy_step(step=step, node=request["node"], ports=[],
                                         image_info=request["image_info"],
                                         configdrive=request.get("configdrive"))
    command.join()
    serialized = command.serialize()
    standby = ext_base.get_extension("standby")
    print(json.dumps({
        "status": serialized["command_status"],
        "result": serialized["command_result"],
        "error": serialized["command_error"] and {
            "type": serialized["command_error"].type,
            "details": serialized["command_error"].details},
        "managers": [m["name"] for m in hardware.get_managers_detail()],
        "written_by": called,
        "partition_uuids": standby.partition_uuids,
        "cached_image_id": standby.cached_image_id,
    }, default=str))


if __name__ == "__main__":
    main()


# -- the agent process itself, driven over its REST API as ironic's conductor does -------
#
# Nothing of the agent is stubbed here: the hardware manager below is a plug-in like ours,
# found through the same entry point group, ranked above every other one, that answers
# get_os_install_device with the test's loop device. It is what keeps a test agent off
# the machine's real disks, so it refuses anything but a loop device over a file in the
# test's directory.

class LoopDiskManager(hardware.HardwareManager):
    """The install device is IPA_TEST_DEVICE, a loop device whose backing file lies under
    IPA_TEST_ROOT; it is also the only disk listed (root device hints then match it)."""

    HARDWARE_MANAGER_NAME = "LoopDiskManager"
    HARDWARE_MANAGER_VERSION = "1.0"

    def evaluate_hardware_support(self):
        return hardware.HardwareSupport.SERVICE_PROVIDER + 1

    def get_os_install_device(self, permit_refresh=False):
        import os
        device, root = os.environ["IPA_TEST_DEVICE"], os.environ["IPA_TEST_ROOT"]
        name = os.path.basename(device)
        with open(f"/sys/block/{name}/loop/backing_file") as fp:
            backing = fp.read().strip()
        if not name.startswith("loop") or not backing.startswith(root.rstrip("/") + "/"):
            raise RuntimeError(f"{device} (backed by {backing}) is not the test's loop device")
        return device

    def list_block_devices(self, include_partitions=False, all_serial_and_wwn=False):
        device = self.get_os_install_device()
        size = int(utils.execute("blockdev", "--getsize64", device)[0])
        return [hardware.BlockDevice(name=device, model="loop", size=size, rotational=False,
                                     serial="test-loop")]
