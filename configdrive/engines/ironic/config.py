"""Our options, in ironic-python-agent's own style: an ``[configdrive]`` section of the
agent's config file, each option also settable on the ramdisk's kernel command line as
``ipa-configdrive-OPTION=VALUE`` (read by the agent's ``get_agent_params``, the way every
``ipa-*`` parameter is). Listed under ``oslo.config.opts`` for oslo-config-generator."""

from __future__ import annotations

from oslo_config import cfg
from oslo_utils import strutils

from ironic_python_agent import utils

GROUP = "configdrive"


def _kernel_param(name: str, default: bool) -> bool:
    value = utils.get_agent_params().get(f"ipa-configdrive-{name.replace('_', '-')}")
    return default if value is None else strutils.bool_from_string(value, default=default)


OPTS = [
    cfg.BoolOpt("write_image", default=_kernel_param("write_image", True),
                help="Let configdrive write whole-disk images in the write_image deploy step. "
                     "Off: IPA's generic manager does it. Kernel parameter "
                     "ipa-configdrive-write-image."),
    cfg.BoolOpt("fallback", default=_kernel_param("fallback", True),
                help="When configdrive declines an image it does not handle (partition "
                     "images, vmdk/vhd/... that only qemu-img converts, other hash "
                     "algorithms, image server logins), hand it to IPA's generic manager. "
                     "Off: the step fails with the reason. Kernel parameter "
                     "ipa-configdrive-fallback."),
]

cfg.CONF.register_opts(OPTS, group=GROUP)


def settings():
    return cfg.CONF[GROUP]


def list_opts():
    return [(GROUP, OPTS)]
