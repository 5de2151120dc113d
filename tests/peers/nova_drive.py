"""Run by the nova venv (.peers/nova): nova's own InstanceMetadata for a fake instance, built
the way nova's unit tests build it (nova/tests/unit/test_metadata.py fake_inst_obj: objects
in memory, the database and neutron stubbed out), and optionally nova's ConfigDriveBuilder
making the ISO with CONF.mkisofs_cmd.

    python nova_drive.py INPUT.json [MKISOFS_CMD OUT.iso]...

One builder makes every image, so they hold the same files (nova draws random_seed when
the metadata is collected).

INPUT.json describes the instance (see tests/test_nova_peer.py). Prints the tree
nova writes, {path: base64 bytes}, as JSON on stdout.
"""

import base64
import json
import sys
import warnings
from unittest import mock

warnings.simplefilter("ignore")

from nova import context, objects  # noqa: E402
from nova.api.metadata import base  # noqa: E402
from nova.network import model as network_model  # noqa: E402
from nova.virt import configdrive  # noqa: E402
import nova.conf  # noqa: E402

objects.register_all()
CONF = nova.conf.CONF
CONF([], project="nova", default_config_files=[], default_config_dirs=[])


def fake_instance(spec, ctxt):
    inst = objects.Instance(
        context=ctxt, id=1, user_id="fake_user", uuid=spec["uuid"], project_id=spec["project_id"],
        key_name=spec["key_name"], key_data=spec["key_data"], host="test",
        launch_index=spec["launch_index"], reservation_id=spec["reservation_id"],
        user_data=base64.b64encode(spec["user_data"].encode()).decode(),
        image_ref="155d900f-4e14-4e4c-a73d-069cbf4541e6", kernel_id=None, ramdisk_id=None,
        vcpus=1, root_device_name="/dev/vda", hostname=spec["hostname"],
        display_name=spec["display_name"], metadata={}, device_metadata=None,
        default_ephemeral_device=None, default_swap_device=None, system_metadata={},
        security_groups=objects.SecurityGroupList(), availability_zone=spec["availability_zone"],
        numa_topology=None)
    inst.keypairs = objects.KeyPairList(objects=[
        objects.KeyPair(name=spec["key_name"], type="ssh", public_key=spec["key_data"])])
    inst.info_cache = objects.InstanceInfoCache(context=ctxt, instance_uuid=inst.uuid,
                                                network_info=network_info(spec["vif"]))
    inst.flavor = objects.Flavor(name=spec["flavor"], memory_mb=512, vcpus=1, root_gb=1,
                                 ephemeral_gb=0, swap=0, extra_specs={})
    inst.ec2_ids = objects.EC2Ids(instance_id=spec["ec2_instance_id"], ami_id=spec["ami_id"],
                                  kernel_id=None, ramdisk_id=None)
    return inst


def network_info(vif):
    """One port with a fixed and a floating IPv4 address, as neutron would report it."""
    fixed = network_model.FixedIP(address=vif["fixed_ip"], floating_ips=[
        network_model.IP(address=vif["floating_ip"], type="floating")])
    subnet = network_model.Subnet(
        cidr=vif["cidr"], ips=[fixed], gateway=network_model.IP(address=vif["gateway"], type="gateway"),
        dns=[network_model.IP(address=vif["dns"], type="dns")], routes=[])
    network = network_model.Network(id=vif["network_id"], bridge="br0", label="private", subnets=[subnet])
    return network_model.NetworkInfo([network_model.VIF(
        id=vif["port_id"], address=vif["mac"], network=network, type="ovs", devname="tap0", mtu=1500)])


def main():
    spec = json.load(open(sys.argv[1]))
    ctxt = context.get_admin_context()
    groups = [{"name": name} for name in spec["security_groups"]]
    with mock.patch.object(objects.Instance, "get_bdms",
                           return_value=objects.BlockDeviceMappingList(objects=[])), \
            mock.patch("nova.network.security_group_api.get_instance_security_groups",
                       return_value=groups):
        md = base.InstanceMetadata(fake_instance(spec, ctxt),
                                   content=[(p, d.encode()) for p, d in spec["files"]])
        tree = {}
        for path, data in md.metadata_for_config_drive():
            tree[path] = data.encode() if isinstance(data, str) else data
        with configdrive.ConfigDriveBuilder(instance_md=md) as builder:
            for command, out in zip(sys.argv[2::2], sys.argv[3::2]):
                CONF.set_override("mkisofs_cmd", command)
                builder.make_drive(out)
    json.dump({p: base64.b64encode(d).decode() for p, d in tree.items()}, sys.stdout)


main()
