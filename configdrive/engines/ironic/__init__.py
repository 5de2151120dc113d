"""configdrive inside ironic-python-agent: a hardware manager that takes over the
``write_image`` deploy step for whole-disk images (``pip install configdrive[ironic]``).

Only the agent loads the manager (through the entry point
``ironic_python_agent.hardware_managers``); the rest of configdrive never imports this
package, and ``configdrive.engines.ironic.request`` works without the agent installed.
"""


def __getattr__(name):
    # Imported on first use, so that the agent-free parts of this package import alone.
    if name == "ConfigDriveHardwareManager":
        from .manager import ConfigDriveHardwareManager
        return ConfigDriveHardwareManager
    raise AttributeError(name)


__all__ = ["ConfigDriveHardwareManager"]
