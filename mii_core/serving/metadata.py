"""Deployment metadata in MII's cache folder, so ``mii_core.client(name)`` works from any process.

``$MII_CACHE_PATH`` (default: per user, ``$XDG_RUNTIME_DIR/mii_core`` or ``~/.cache/mii_core``) holds
one folder per deployment (mode 0700) with ``deployment.json`` (mode 0600: it names the ports, the link's
secret key and the API key), written atomically (a temporary file renamed over the old one), and the
processes' logs.

A record tells a client where to connect and with which key, so trusting another user's record hands
that user the client's requests (and, before the links carried no pickles, the client's process). The
cache, a deployment's folder and its record are therefore used only when owned by the current user and
not writable by group or others: :func:`check_private` refuses anything else, saying why.
"""
from __future__ import annotations

import json
import os
import pwd
import stat
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

CACHE_ENV = "MII_CACHE_PATH"
CACHE_NAME = "mii_core"  # under $XDG_RUNTIME_DIR or ~/.cache
RECORD_FILE = "deployment.json"


class UnsafeCache(RuntimeError):
    """A cache folder or record another local user could have written: never trusted."""


@dataclass
class DeploymentRecord:
    name: str
    config: dict[str, Any]  # the MIIConfig, as JSON
    authkey: str  # hex; keys the deployment's links
    router_link: tuple[str, int]
    replica_links: list[tuple[str, int]]
    placements: list[dict[str, Any]]  # ReplicaPlacement fields per replica
    front_ends: dict[str, tuple[str, int]] = field(default_factory=dict)
    status: str = "starting"  # starting → ready → (removed at terminate)
    router_pid: Optional[int] = None
    replica_pids: list[int] = field(default_factory=list)
    # an MII Legacy task deployment: {"task", "model_type", "model_dir", "mii_config"} (its replicas serve
    # that task model instead of a generation engine); None for a mii_core.serve() deployment
    legacy: Optional[dict[str, Any]] = None
    # replica i's host when it runs on another machine (launched there through DeepSpeed's pdsh runner),
    # "" when it runs on this one; empty: every replica runs here
    replica_hosts: list[str] = field(default_factory=list)

    @property
    def key(self) -> bytes:
        return bytes.fromhex(self.authkey)

    def remote_host(self, index: int) -> Optional[str]:
        """The other machine replica ``index`` runs on; None when it runs on this one."""
        return (self.replica_hosts[index] or None) if self.replica_hosts else None

    def link_bind(self, index: int) -> tuple[str, int]:
        """Where replica ``index``'s link listens: the address the router reaches it on, unless the
        deployment's ``replica_link_host`` asks a replica on another host for another (e.g. 0.0.0.0)."""
        host, port = self.replica_links[index]
        wanted = self.config.get("replica_link_host")
        return (wanted if wanted and self.remote_host(index) else host), port

    folder: str = ""  # where this record and the logs live


    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "DeploymentRecord":
        data = dict(data)
        data["router_link"] = tuple(data["router_link"])
        data["replica_links"] = [tuple(a) for a in data["replica_links"]]
        data["front_ends"] = {k: tuple(v) for k, v in data.get("front_ends", {}).items()}
        return cls(**data)


def default_cache() -> Path:
    """Per user: a shared default (MII's /tmp/mii_cache) lets another user plant records first."""
    runtime = os.getenv("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime and os.path.isabs(runtime) else Path.home() / ".cache"
    return base / CACHE_NAME


def cache_root() -> Path:
    return Path(os.getenv(CACHE_ENV) or default_cache())


def deployment_folder(name: str) -> Path:
    return cache_root() / name


def _owner_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def check_private(path: Path, what: str) -> None:
    """Raises UnsafeCache unless ``path`` is owned by this user and not writable by group or others."""
    info = os.stat(path)
    me = os.geteuid()
    if info.st_uid != me:
        raise UnsafeCache(f"refusing {what} {path}: it is owned by {_owner_name(info.st_uid)}, not by you "
                          f"({_owner_name(me)}), so another user may have planted it; remove it, or set "
                          f"{CACHE_ENV} to a folder of your own")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeCache(f"refusing {what} {path}: it is writable by group or others (mode "
                          f"{stat.S_IMODE(info.st_mode):04o}); run chmod go-w on it, or set {CACHE_ENV} to a "
                          "private folder")


def ensure_folder(name: str) -> Path:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    check_private(root, "the deployment cache")
    folder = root / name
    folder.mkdir(exist_ok=True, mode=0o700)
    check_private(folder, "the deployment folder")
    os.chmod(folder, 0o700)
    return folder


def write_record(record: DeploymentRecord) -> None:
    folder = Path(record.folder) if record.folder else ensure_folder(record.name)
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".deployment-", suffix=".json")
    try:
        os.fchmod(fd, 0o600)  # before any byte is written: the file names keys
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(asdict(record), out, indent=2)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, folder / RECORD_FILE)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_record(name: str) -> Optional[DeploymentRecord]:
    return load_record(deployment_folder(name))


def load_record(folder: Path) -> Optional[DeploymentRecord]:
    """The record in ``folder`` (None when there is none); UnsafeCache when another user could have written it."""
    path = Path(folder) / RECORD_FILE
    if not path.exists():
        return None
    try:  # the record may be removed meanwhile (a router that failed to start, a deployment terminating)
        for part, what in ((Path(folder).parent, "the deployment cache"), (Path(folder), "the deployment folder"),
                           (path, "the deployment record")):
            check_private(part, what)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return DeploymentRecord.from_json(json.loads(text))


def remove_record(record: DeploymentRecord) -> None:
    folder = Path(record.folder) if record.folder else deployment_folder(record.name)
    (folder / RECORD_FILE).unlink(missing_ok=True)


def known_deployments() -> list[str]:
    root = cache_root()
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob(f"*/{RECORD_FILE}"))


def process_alive(pid: Optional[int]) -> bool:
    """True for a live process; a zombie (exited, not yet reaped by its parent) counts as gone."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lost_ranks(rank_pids: list[int]) -> list[str]:
    """A tensor-parallel replica's ranks whose processes are gone, each as "rank r of N (pid p)"."""
    if len(rank_pids) < 2:
        return []
    return [f"rank {r} of {len(rank_pids)} (pid {pid})" for r, pid in enumerate(rank_pids) if not process_alive(pid)]
