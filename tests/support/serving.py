"""Helpers for deployment tests: free loopback ports, process checks, waiting with a deadline."""

from __future__ import annotations

import os
import random
import socket
import time

SMALL_KV = {"state_manager": {"memory_config": {"mode": "allocate", "size": 96}}}  # 96 blocks: quick to start


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ephemeral_port_floor() -> int:
    """The lowest port the kernel hands out as the local end of outgoing connections."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port_block(count: int) -> int:
    """A base port with `count` consecutive free ports (checked now; tests use them right away), below
    the ephemeral range, so that no client connection can take one as its local port meanwhile (that made
    a "port freed after terminate" check fail now and then). 200 spare above the block: a tensor-parallel
    replica also takes torch_dist_port + 100·i."""
    for _ in range(200):
        base = random.randrange(20000, min(60000, ephemeral_port_floor()) - count - 200)
        if all(port_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no block of free ports found")


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line holds `text` (a deployment's folder: its router and replicas)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if text.encode() in cmdline.read() and pid_alive(int(pid)):
                    found.append(int(pid))
        except OSError:
            pass
    return found


def wait_until(condition, timeout: float = 30.0, what: str = "condition", interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(interval)


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
