"""The real ironic-python-agent process (``ironic-python-agent --config-file F``, from the
IPA venv) with a test hardware manager (ipa_agent.LoopDiskManager) that offers a loop
device as the install device, driven over its REST API as ironic's conductor drives it.

Why under ``unshare --pid --fork --mount-proc``: IPA's own write path waits for the disk
with ``fuser DEVICE`` (disk_utils.wait_for_disk_to_become_available), which must read
every process's /proc/PID/fd; in this sandbox /proc/1/fd is not readable ("Cannot stat
file /proc/1/fd/0: Permission denied"), so fuser fails and IPA never sees the disk free.
In a PID namespace of its own, with its own /proc, the agent sees only its own processes,
as it does in a ramdisk. ``--kill-child`` ends the agent when the test ends unshare.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOKEN = "test-agent-token-0123456789abcdef"
START_GUARD = 120      # seconds: a hang guard, not a timing assertion
COMMAND_GUARD = 900


def agent_venv(root: Path) -> Path | None:
    """The IPA venv with configdrive (the checkout ``root``) installed into it as a ramdisk
    build would: ``pip install --no-deps .`` (its dependencies are in peers.sh's line).
    Into a copy of .peers/ipa of the checkout's own (build/ipa-peer): .peers is shared by
    every worktree of the repository (each links it), and an install there would test
    whichever checkout installed last. Returns its python, or None with neither."""
    peer, venv = root / ".peers" / "ipa", root / "build" / "ipa-peer"
    # peers.sh writes .installed last: a peer without it is being rebuilt (by another
    # checkout sharing .peers), and the copy made from it before serves meanwhile.
    stamp = (peer / ".installed").read_text() if (peer / ".installed").exists() else None
    current = (venv / ".installed").read_text() if (venv / ".installed").exists() else None
    if stamp is not None and stamp != current:
        shutil.rmtree(venv, ignore_errors=True)
        shutil.copytree(peer, venv, symlinks=True)
    elif current is None:
        return None
    python = venv / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", root],
                   check=True, capture_output=True)
    return python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    """``with Agent(python, workdir, device) as agent: agent.command(name, params)``."""

    def __init__(self, python: Path, workdir: Path, device: str, *, ours: bool = True,
                 conf: str = "", retries: int = 0, retry_interval: float = 0,
                 tmpdir: Path | None = None):
        self.python, self.workdir, self.device = python, Path(workdir), device
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / f"agent-{self.port}.log"
        self.tmpdir = Path(tmpdir or self.workdir / f"agent-tmp-{self.port}")
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        plugins = self.workdir / "agent-plugins"
        dist = plugins / "ipa_test_loop_disk-1.0.dist-info"
        dist.mkdir(parents=True, exist_ok=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ipa-test-loop-disk\nVersion: 1.0\n")
        (dist / "entry_points.txt").write_text(
            "[ironic_python_agent.hardware_managers]\nloop_disk = ipa_agent:LoopDiskManager\n")
        self.conf = self.workdir / f"agent-{self.port}.conf"
        # No api_url: no lookup and no heartbeats (the agent logs an error saying so);
        # the token is the one the conductor would have handed over at lookup.
        self.conf.write_text(
            "[DEFAULT]\n"
            f"listen_host = 127.0.0.1\nlisten_port = {self.port}\nagent_token = {TOKEN}\n"
            f"log_file = {self.log_path}\n"
            f"image_download_connection_retries = {retries}\n"
            f"image_download_connection_retry_interval = {retry_interval:g}\n"
            # No waiting for a disk of the size IPA guesses a root disk by before the
            # test manager is asked.
            "disk_wait_attempts = 1\ndisk_wait_delay = 0\n"
            + conf
            + ("" if ours else "[configdrive]\nwrite_image = false\n"))
        self.env = {**os.environ, "PYTHONPATH": f"{plugins}{os.pathsep}{HERE}",
                    "IPA_TEST_DEVICE": device, "IPA_TEST_ROOT": str(self.workdir),
                    "TMPDIR": str(self.tmpdir)}
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Agent":
        cmd = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
               str(self.python), "-c",
               "import sys; from ironic_python_agent.cmd.agent import run; sys.exit(run())",
               "--config-file", str(self.conf)]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=open(self.workdir / f"agent-{self.port}.err", "wb"))
        until = time.monotonic() + START_GUARD
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the agent exited with {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/v1/status", timeout=5) as resp:
                    json.load(resp)
                return self
            except (urllib.error.URLError, OSError):
                if time.monotonic() > until:
                    raise RuntimeError(f"the agent did not answer in {START_GUARD} s: {self.log()[-3000:]}")
                time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        # SIGKILL, as a node powered off: the agent is its namespace's PID 1, which gets
        # no signal it has no handler for (SIGTERM included), and unshare itself ignores
        # SIGTERM while its child runs. --kill-child then ends unshare's side too.
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.pid(), signal.SIGKILL)
            except (OSError, IndexError, ValueError):
                self.proc.kill()
            self.proc.wait()

    def pid(self) -> int:
        """The agent's own process (unshare's child), as the host sees it."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return int(children[0])

    def peak_rss(self) -> int:
        """VmHWM of the agent process, bytes (its peak resident set so far)."""
        for line in Path(f"/proc/{self.pid()}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM")

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        err = self.workdir / f"agent-{self.port}.err"
        return text + (err.read_text(errors="replace") if err.exists() else "")

    def command(self, name: str, params: dict, wait: bool = True) -> dict:
        """POST /v1/commands/?wait=true&agent_token=..., as ironic's AgentClient._command."""
        query = f"wait={str(wait).lower()}&agent_token={TOKEN}"
        request = urllib.request.Request(f"{self.url}/v1/commands/?{query}", method="POST",
                                         data=json.dumps({"name": name, "params": params}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=COMMAND_GUARD) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            return {"http_status": exc.code, **json.loads(exc.read() or b"{}")}

    def write_image(self, node: dict, image_info: dict, configdrive=None) -> dict:
        """The conductor's write_image: get_deploy_steps (which tells it the hardware
        managers' versions), then execute_deploy_step with them as deploy_version."""
        steps = self.command("deploy.get_deploy_steps", {"node": node, "ports": []})
        version = steps["command_result"]["hardware_manager_version"]
        step = {"interface": "deploy", "step": "write_image", "priority": 80,
                "args": {"image_info": image_info, "configdrive": configdrive}}
        return self.command("deploy.execute_deploy_step",
                            {"step": step, "node": node, "ports": [], "deploy_version": version})

    def partition_uuids(self) -> dict:
        return self.command("standby.get_partition_uuids", {})
