"""Run by the openstacksdk venv (.peers/sdk): openstack.baremetal.configdrive.build, the
builder ironic's conductor uses for JSON config drives, with whatever genisoimage is first
on PATH.

    python sdk_drive.py INPUT.json

INPUT.json: {"meta_data", "user_data", "network_data", "vendor_data", "versions"} (any may
be null). Prints the packed drive (gzip+base64), as the SDK returns it.
"""

import json
import sys

from openstack.baremetal import configdrive

spec = json.load(open(sys.argv[1]))
user_data = spec.get("user_data")
print(configdrive.build(spec["meta_data"], user_data=user_data.encode() if user_data else None,
                        versions=spec.get("versions"), network_data=spec.get("network_data"),
                        vendor_data=spec.get("vendor_data")))
