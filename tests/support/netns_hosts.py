"""Two "hosts" on one machine for the multi-host tests: a pair of network namespaces joined by a veth pair
(10.213.47.1 and .2, a private /30 used only inside these namespaces), and in the "remote" one an sshd
with a throwaway host key that accepts a throwaway client key, in a PID namespace of its own, so that
what runs "there" (and DeepSpeed's pkill there) sees only that host's processes.

Nothing outside the temporary folder is changed but /run/sshd (sshd's privilege separation folder,
which the openssh-server package expects). Everything is undone by :meth:`TwoHosts.close`: the sshd
(the remote PID namespace's first process, whose end ends every process left in it) and both namespaces
(which takes the veth pair with them).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

LOCAL_ADDRESS, REMOTE_ADDRESS, PREFIX = "10.213.47.1", "10.213.47.2", 30
TOOLS = {"ip": "iproute2", "unshare": "util-linux", "sshd": "openssh-server", "ssh": "openssh-client",
         "ssh-keygen": "openssh-client", "pdsh": "pdsh"}
COMMAND_SECONDS = 20
SSHD = "/usr/sbin/sshd"


def missing_requirements() -> list[str]:
    """What this machine lacks for the two hosts (empty: all there)."""
    missing = [f"{tool} (apt-get install {package})" for tool, package in TOOLS.items()
               if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None]
    if os.geteuid() != 0:
        missing.append("root (network namespaces)")
    return missing


def run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=COMMAND_SECONDS).stdout


@dataclass
class TwoHosts:
    folder: Path
    local_ns: str = field(default_factory=lambda: f"mh{os.getpid()}l")
    remote_ns: str = field(default_factory=lambda: f"mh{os.getpid()}r")
    local_address: str = LOCAL_ADDRESS
    remote_address: str = REMOTE_ADDRESS
    sshd_launcher: subprocess.Popen | None = None

    @property
    def remote_device(self) -> str:
        """The remote host's end of the veth pair (down: the host is cut off)."""
        return f"{self.remote_ns}b"

    @property
    def ssh_config(self) -> Path:
        return self.folder / "ssh_config"

    def in_local(self, *command: str) -> list[str]:
        """``command`` run on the "local" host (its network namespace)."""
        return ["ip", "netns", "exec", self.local_ns, *command]

    def start(self) -> "TwoHosts":
        self._make_network()
        self._make_keys()
        self._start_sshd()
        self._wait_for_ssh()
        return self

    def _make_network(self) -> None:
        run("ip", "netns", "add", self.local_ns)
        run("ip", "netns", "add", self.remote_ns)
        run("ip", "link", "add", f"{self.local_ns}a", "netns", self.local_ns, "type", "veth", "peer", "name",
            self.remote_device, "netns", self.remote_ns)
        for ns, device, address in ((self.local_ns, f"{self.local_ns}a", self.local_address),
                                    (self.remote_ns, self.remote_device, self.remote_address)):
            run("ip", "-n", ns, "addr", "add", f"{address}/{PREFIX}", "dev", device)
            run("ip", "-n", ns, "link", "set", device, "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")

    def _make_keys(self) -> None:
        for name in ("host_key", "client_key"):
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mii-core-test", "-f", str(self.folder / name))
        shutil.copy(self.folder / "client_key.pub", self.folder / "authorized_keys")
        host_key = (self.folder / "host_key.pub").read_text().split()[:2]
        (self.folder / "known_hosts").write_text(f"{self.remote_address} {' '.join(host_key)}\n")
        (self.folder / "sshd_config").write_text(
            f"ListenAddress {self.remote_address}\nHostKey {self.folder}/host_key\n"
            f"AuthorizedKeysFile {self.folder}/authorized_keys\nPidFile {self.folder}/sshd.pid\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\n")
        self.ssh_config.write_text(
            f"Host *\n  IdentityFile {self.folder}/client_key\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.folder}/known_hosts\n  StrictHostKeyChecking yes\n  BatchMode yes\n"
            "  ConnectTimeout 5\n")

    def _start_sshd(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd refuses to start without it
        # --kill-child: ending `unshare` ends sshd, the namespace's first process, and with it every process there
        self.sshd_launcher = subprocess.Popen(
            ["ip", "netns", "exec", self.remote_ns, "unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
             SSHD, "-D", "-f", str(self.folder / "sshd_config"), "-E", str(self.folder / "sshd.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _wait_for_ssh(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            probe = subprocess.run(self.in_local("ssh", "-F", str(self.ssh_config), self.remote_address, "true"),
                                   capture_output=True, text=True, timeout=COMMAND_SECONDS)
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline or self.sshd_launcher.poll() is not None:
                log = (self.folder / "sshd.log").read_text() if (self.folder / "sshd.log").exists() else ""
                raise RuntimeError(f"ssh to the remote namespace failed: {probe.stderr.strip()}\nsshd log:\n{log}")
            time.sleep(0.2)

    def remote_processes(self) -> list[str]:
        """The processes on the "remote" host but its sshd listener, as "pid command" (root namespace pids)."""
        init = self._sshd_pid()
        if init is None:
            return []
        namespace = os.readlink(f"/proc/{init}/ns/pid")
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if int(pid) != init and os.readlink(f"/proc/{pid}/ns/pid") == namespace:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                    found.append(f"{pid} {command.strip()}")
            except OSError:
                pass  # gone meanwhile
        return found

    def _sshd_pid(self) -> int | None:
        """sshd: the child of `unshare` (the first process of the remote PID namespace)."""
        if self.sshd_launcher is None or self.sshd_launcher.poll() is not None:
            return None
        launcher = self.sshd_launcher.pid
        try:
            children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def close(self) -> None:
        """Ends sshd (and so every process on the remote host) and deletes both namespaces."""
        if self.sshd_launcher is not None and self.sshd_launcher.poll() is None:
            self.sshd_launcher.send_signal(signal.SIGKILL)  # the `ip netns exec` that became `unshare`
            self.sshd_launcher.wait(timeout=COMMAND_SECONDS)
        for ns in (self.local_ns, self.remote_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=COMMAND_SECONDS)
