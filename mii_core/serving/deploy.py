"""``mii_core.serve()``: checks everything, then starts a persistent deployment and returns its client.

Every check that can fail runs before a process is spawned: options (MII's forms), transports
installed, device placement (MII's ``device_map`` rules), for replicas on other hosts DeepSpeed's
launcher and pdsh installed, ports on this machine free, no live deployment of that name.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, Union

from mii_core.config import ModelConfig, validate_options
from mii_core.config.deployment import DeploymentType, MIIConfig, split_serve_options
from mii_core.serving.client import MIIClient
from mii_core.serving.errors import DeploymentStartError
from mii_core.serving.launch import log_path, log_tail, spawn_router, tp_launcher
from mii_core.serving.metadata import (DeploymentRecord, ensure_folder, process_alive, read_record, remove_record,
                                       write_record)
from mii_core.serving.ports import LINK_HOST, check_ports_free, plan_ports
from mii_core.serving.remote_launch import check_remote_launch
from mii_core.serving.transport import check_installed

READY_POLL_SECONDS = 0.1


def serve(model_name_or_path: Optional[str] = None, model_config: Optional[dict[str, Any]] = None,
          mii_config: Union[MIIConfig, dict[str, Any], str, os.PathLike, None] = None, **kwargs: Any) -> MIIClient:
    """Starts a deployment of ``model_name_or_path`` and returns its client.

    ``kwargs`` are model options first, then deployment options (MII's rule); ``mii_config`` is a
    dict, an MIIConfig, or the path of a JSON file with the same keys.
    """
    config = build_config(model_name_or_path, model_config, mii_config, kwargs)
    return MIIClient(start_deployment(config))


def start_deployment(config: MIIConfig, legacy: Optional[dict[str, Any]] = None) -> DeploymentRecord:
    """Checks, then starts the router (which starts the replicas and front ends); returns the ready record.
    ``legacy``: the task model an MII Legacy deployment's replicas serve (``DeploymentRecord.legacy``)."""
    record = plan_deployment(config)
    record.legacy = legacy
    write_record(record)
    process = spawn_router(Path(record.folder))
    threading.Thread(target=process.wait, name="mii-router-reaper", daemon=True).start()  # no zombie
    return wait_until_ready(process, record, config.startup_timeout)


def build_config(model_name_or_path: Optional[str], model_config: Optional[dict[str, Any]],
                 mii_config: Union[MIIConfig, dict[str, Any], str, os.PathLike, None],
                 kwargs: dict[str, Any]) -> MIIConfig:
    base = _mii_config_dict(mii_config)
    model_options = dict(base.pop("model_config", None) or base.pop("model_conf", None) or {})
    model_options.update(model_config or {})
    if model_name_or_path is not None:
        model_options["model_name_or_path"] = model_name_or_path
    to_model, to_deployment, unknown = split_serve_options(kwargs)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}; model options are: "
                         f"{', '.join(sorted(ModelConfig.model_fields))}; deployment options are: "
                         f"{', '.join(sorted(set(MIIConfig.model_fields) - {'model_conf'}))}")
    model_options.update(to_model)
    path = model_options.get("model_name_or_path")
    if isinstance(path, (str, os.PathLike)) and os.path.exists(path):
        model_options["model_name_or_path"] = os.path.abspath(path)  # replicas may start elsewhere
    base.update(to_deployment)
    base["model_config"] = validate_options(ModelConfig, model_options, "model options")
    return validate_options(MIIConfig, base, "deployment options")


def _mii_config_dict(mii_config: Union[MIIConfig, dict[str, Any], str, os.PathLike, None]) -> dict[str, Any]:
    if mii_config is None:
        return {}
    if isinstance(mii_config, MIIConfig):
        return mii_config.model_dump(by_alias=True)
    if isinstance(mii_config, dict):
        return dict(mii_config)
    if isinstance(mii_config, (str, os.PathLike)):
        try:
            data = json.loads(Path(mii_config).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"mii_config {mii_config!r}: cannot read it as a JSON config file ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"mii_config file {mii_config} must hold a JSON object of deployment options")
        return data
    raise TypeError(f"mii_config must be a dict, an MIIConfig or a JSON file path, got {type(mii_config).__name__}")


def plan_deployment(config: MIIConfig) -> DeploymentRecord:
    """Every check before spawning; returns the record the processes start from."""
    _refuse_non_persistent(config)
    transports = config.chosen_transports()
    check_installed(transports)
    model = config.model_conf
    placements = [replica.placement() for replica in config.generate_replica_configs()]
    if model.tensor_parallel > 1:
        tp_launcher()  # a launcher must exist (deepspeed, else torchrun): refused here rather than at start
    remote_hosts = [None if p.is_local else p.host for p in placements]
    if any(remote_hosts):
        check_remote_launch(config.hostfile, [host for host in remote_hosts if host])
    ports = plan_ports(config, transports, remote_hosts)
    _refuse_running_duplicate(config.deployment_name)
    check_ports_free(ports)
    config.transports = transports  # the router starts exactly what was checked here
    folder = ensure_folder(config.deployment_name)
    for old_log in folder.glob("*.log"):
        old_log.unlink()  # a failure's log tail must come from this run
    return DeploymentRecord(
        name=config.deployment_name, config=config.model_dump(mode="json", by_alias=True),
        authkey=secrets.token_hex(32), router_link=(LINK_HOST, ports.router_link),
        replica_links=ports.replica_addresses(), replica_hosts=[host or "" for host in remote_hosts],
        placements=[asdict(p) for p in placements], front_ends=ports.front_ends, folder=str(folder))


def _refuse_non_persistent(config: MIIConfig) -> None:
    if config.deployment_type == DeploymentType.NON_PERSISTENT:
        raise ValueError("deployment_type='non-persistent' runs the model in your own process, which serve() (a "
                         "persistent deployment) does not; use mii_core.pipeline(model) for text generation, or "
                         "mii_core.legacy.deploy(task, model, deployment_type='non-persistent') for MII Legacy's "
                         "tasks, or give serve() deployment_type='local'")


def _refuse_running_duplicate(name: str) -> None:
    existing = read_record(name)
    if existing is not None and process_alive(existing.router_pid):
        raise ValueError(f"a deployment named '{name}' is already running (router pid {existing.router_pid}); "
                         f"terminate it (mii_core.client('{name}').terminate_server()) or choose another "
                         "deployment_name")


def wait_until_ready(process, record: DeploymentRecord, timeout: float) -> DeploymentRecord:
    deadline = time.monotonic() + timeout + 30  # the router has its own startup_timeout; this is a backstop
    router_log = log_path(Path(record.folder), "router")
    while True:
        code = process.poll()
        if code is not None:
            raise DeploymentStartError(f"deployment '{record.name}' failed to start (its router exited with code "
                                       f"{code}). The end of {router_log}:\n{log_tail(router_log)}")
        current = read_record(record.name)
        if current is not None and current.status == "ready" and current.router_pid == process.pid:
            return current
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            remove_record(record)
            raise DeploymentStartError(f"deployment '{record.name}' not ready after {timeout:.0f} s. The end of "
                                       f"{router_log}:\n{log_tail(router_log)}")
        time.sleep(READY_POLL_SECONDS)
