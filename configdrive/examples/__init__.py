"""A built-in example instance, so that ``configdrive build --example`` shows the whole
format without any input files: hostname, an SSH key, cloud-config user data with a
runcmd, a static IPv4 network with DNS, and vendor data."""

from importlib.resources import files


def example_paths() -> dict:
    base = files(__name__)
    return {
        "meta_data": str(base / "meta_data.json"),
        "user_data": str(base / "user_data"),
        "network_data": str(base / "network_data.json"),
        "vendor_data2": str(base / "vendor_data2.json"),
        "ssh_keys": [str(base / "example.pub")],
    }
