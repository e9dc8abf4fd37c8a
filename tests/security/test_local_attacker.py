"""Another local user plants a deployment record and a listener (issue 22, row 1).

The attacker is a real second Unix user (``nobody``, through ``setpriv``) running a real listener on
127.0.0.1 that knows the key it wrote into its record and answers with a pickle that would create a
file as the victim. The victim's ``mii-core generate`` must refuse the record, never connect, and run
nothing.
"""
from __future__ import annotations

import os
import pickle
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

NOBODY = 65534
ATTACKER = r'''
import json, os, sys
from multiprocessing.connection import Listener
shared, payload = sys.argv[1], open(sys.argv[2], "rb").read()
key = os.urandom(32)
listener = Listener(("127.0.0.1", 0), authkey=key)
folder = os.path.join(shared, "mii_cache", "demo")
os.makedirs(folder, mode=0o700)
record = {"name": "demo", "config": {}, "authkey": key.hex(), "router_link": list(listener.address),
          "replica_links": [], "placements": [], "front_ends": {}, "status": "ready",
          "router_pid": os.getpid(), "replica_pids": [], "folder": folder}
fd = os.open(os.path.join(folder, ".tmp"), os.O_WRONLY | os.O_CREAT, 0o600)
os.write(fd, json.dumps(record).encode())
os.close(fd)
os.rename(os.path.join(folder, ".tmp"), os.path.join(folder, "deployment.json"))
with listener.accept() as conn:
    open(os.path.join(shared, "connected"), "w").close()
    conn.recv_bytes()
    conn.send_bytes(payload)
'''


class Planted:
    """Unpickling this creates ``path``: proof that the attacker's code ran in the victim's process."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _can_switch_user() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None and Path("/usr/bin/python3").exists()


@pytest.fixture
def shared_folder():
    """A /tmp-like folder (world-writable, sticky) both users reach."""
    folder = Path(tempfile.mkdtemp(prefix="mii-shared-", dir="/tmp"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def attacker(shared_folder, tmp_path):
    """The attacker's record and listener, running as nobody; yields (shared folder, proof file)."""
    if not _can_switch_user():
        pytest.skip("needs root and setpriv to act as a second user")
    proof = tmp_path / "code-ran-as-victim"  # tmp_path is the victim's 0700 folder: nobody cannot create it
    payload = shared_folder / "payload"
    payload.write_bytes(pickle.dumps(("done", [Planted(str(proof))])))
    script = shared_folder / "attacker.py"
    script.write_text(ATTACKER)
    process = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                "/usr/bin/python3", str(script), str(shared_folder), str(payload)])
    record = shared_folder / "mii_cache" / "demo" / "deployment.json"
    deadline = time.monotonic() + 30
    while not record.exists():
        assert process.poll() is None, "the attacker's listener did not start"
        assert time.monotonic() < deadline, "the attacker's record did not appear within 30 s"
        time.sleep(0.05)
    assert record.stat().st_uid == NOBODY
    yield shared_folder, proof
    process.kill()
    process.wait(10)


def test_generate_refuses_a_record_planted_by_another_user_and_runs_nothing(attacker):
    shared, proof = attacker
    env = dict(os.environ, MII_CACHE_PATH=str(shared / "mii_cache"))
    done = subprocess.run([sys.executable, "-m", "mii_core", "generate", "demo", "hello"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "owned by nobody (uid 65534), not by you" in done.stderr
    assert not proof.exists()  # the pickle never ran as the victim
    assert not (shared / "connected").exists()  # the victim never even connected


def test_the_client_refuses_it_too(attacker, monkeypatch):
    import mii_core
    from mii_core.serving.metadata import UnsafeCache

    shared, proof = attacker
    monkeypatch.setenv("MII_CACHE_PATH", str(shared / "mii_cache"))
    with pytest.raises(UnsafeCache, match="another user may have planted it"):
        mii_core.client("demo")
    assert not proof.exists()


def test_a_folder_writable_by_others_is_refused(tmp_path, monkeypatch):
    from mii_core.serving import metadata

    cache = tmp_path / "cache"
    monkeypatch.setenv("MII_CACHE_PATH", str(cache))
    record = metadata.DeploymentRecord("loose", {}, "00" * 32, ("127.0.0.1", 1), [], [])
    metadata.write_record(record)
    assert metadata.read_record("loose").name == "loose"  # private: trusted
    (cache / "loose").chmod(0o777)
    with pytest.raises(metadata.UnsafeCache, match=r"writable by group or others \(mode 0777\)"):
        metadata.read_record("loose")
    (cache / "loose").chmod(0o700)
    (cache / "loose" / "deployment.json").chmod(0o620)
    with pytest.raises(metadata.UnsafeCache, match="deployment record"):
        metadata.read_record("loose")
    cache.chmod(0o1777)  # a shared cache, as /tmp/mii_cache was: no new deployment goes there either
    with pytest.raises(metadata.UnsafeCache, match="the deployment cache"):
        metadata.ensure_folder("other")


def test_the_default_cache_is_per_user(tmp_path, monkeypatch):
    from mii_core.serving import metadata

    monkeypatch.delenv("MII_CACHE_PATH", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert metadata.cache_root() == tmp_path / "run" / "mii_core"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert metadata.cache_root() == tmp_path / "home" / ".cache" / "mii_core"
    folder = metadata.ensure_folder("mine")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
