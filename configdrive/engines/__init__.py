"""configdrive inside the engines that consume drives: genisoimage's command line for nova
and openstacksdk, ironic-python-agent's hardware manager, and fixtures for datasource tests."""
