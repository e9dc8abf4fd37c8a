"""Deployment metadata in MII's cache folder, so ``mii_core.client(name)`` works from any process.

``$MII_CACHE_PATH`` (default ``/tmp/mii_cache``) holds one folder per deployment (mode 0700) with
``deployment.json`` (mode 0600: it names the ports, the link's secret key and the API key), written
atomically (a temporary file renamed over the old one), and the processes' logs.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

CACHE_ENV = "MII_CACHE_PATH"
DEFAULT_CACHE = "/tmp/mii_cache"
RECORD_FILE = "deployment.json"


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

    @property
    def key(self) -> bytes:
        return bytes.fromhex(self.authkey)

    folder: str = ""  # where this record and the logs live


    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "DeploymentRecord":
        data = dict(data)
        data["router_link"] = tuple(data["router_link"])
        data["replica_links"] = [tuple(a) for a in data["replica_links"]]
        data["front_ends"] = {k: tuple(v) for k, v in data.get("front_ends", {}).items()}
        return cls(**data)


def cache_root() -> Path:
    return Path(os.getenv(CACHE_ENV) or DEFAULT_CACHE)


def deployment_folder(name: str) -> Path:
    return cache_root() / name


def ensure_folder(name: str) -> Path:
    folder = deployment_folder(name)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
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
    try:
        text = (Path(folder) / RECORD_FILE).read_text(encoding="utf-8")
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
