"""Deployment options of ``mii_core.serve`` (MII's ``MIIConfig``: its names, defaults, config forms).

``deployment_type`` is MII's: ``"local"`` (a persistent deployment: what ``serve`` starts) or
``"non-persistent"`` (in the caller's process: ``mii_core.pipeline``, ``mii_core.legacy.deploy``);
``"aml"`` (Azure ML assets) is refused. ``generate_replica_configs`` places the replicas with the
launcher's own rules (``placement.py``, ``replicas.py``).

MII's options keep their meaning: ``port_number`` is the gRPC front end (MII's load balancer),
``enable_restful_api`` adds the REST front end on ``restful_api_host:restful_api_port``,
``restful_processes`` sizes the REST server (threads here, processes in MII). mii-core adds the
fields below the line; see README "Serving".
"""
from __future__ import annotations

import os
import re
from enum import Enum
from pathlib import PurePath
from typing import Any, Optional

from pydantic import ConfigDict, Field, field_validator, model_validator

from mii_core.config.base import StrictModel
from mii_core.config.model import ModelConfig
from mii_core.config.placement import place_replicas
from mii_core.config.replicas import ReplicaConfig, replica_configs

TRANSPORTS_ENV = "MII_CORE_TRANSPORTS"  # comma-separated transport names, when serve() names none
DEPLOYMENT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class DeploymentType(str, Enum):
    """MII's deployment types (a ``str`` enum, so ``DeploymentType.LOCAL == "local"``)."""
    LOCAL = "local"
    NON_PERSISTENT = "non-persistent"
    AML = "aml"  # MII's Azure ML assets; named here so that it is refused with a reason, not as unknown


AML_REFUSED = ("deployment_type 'aml' (Azure ML deployment assets) is not supported by mii-core; use 'local' "
               "(mii_core.serve: a persistent deployment) or 'non-persistent' (mii_core.pipeline, or "
               "mii_core.legacy.deploy(..., deployment_type='non-persistent'))")


def deployment_type_of(value: Any) -> DeploymentType:
    """MII's names or members → the member; 'aml' and unknown names are errors saying what to use."""
    try:
        kind = DeploymentType(value)
    except ValueError:
        raise ValueError(f"deployment_type {value!r} is not one of MII's; use 'local' or 'non-persistent'") from None
    if kind is DeploymentType.AML:
        raise ValueError(AML_REFUSED)
    return kind


def default_deployment_name(model_name_or_path: str) -> str:
    """MII's rule: the model's last path part plus ``-mii-deployment``."""
    return f"{PurePath(str(model_name_or_path).rstrip('/')).name}-mii-deployment"


class MIIConfig(StrictModel):
    # ``model_config`` is MII's key but pydantic's reserved name, so the field is ``model_conf`` (as in MII).
    model_config = ConfigDict(populate_by_name=True)

    deployment_name: str = ""
    deployment_type: DeploymentType = DeploymentType.LOCAL
    model_conf: ModelConfig = Field(alias="model_config")
    port_number: int = Field(default=50050, gt=0, lt=65536)
    enable_restful_api: bool = False
    restful_api_host: str = "localhost"
    restful_api_port: int = Field(default=51080, gt=0, lt=65536)
    restful_processes: int = Field(default=32, ge=1)
    hostfile: str = "/job/hostfile"
    # ---- added by mii-core ----
    transports: Optional[list[str]] = Field(default=None, description="None: $MII_CORE_TRANSPORTS, else ['grpc']")
    host: str = Field(default="localhost", description="where front ends without their own host option listen")
    transport_ports: dict[str, int] = Field(default_factory=dict,
                                            description="ports of transports MII has no option for")
    max_queued_requests: int = Field(default=1024, gt=0, description="requests waiting to start; more get 503")
    api_key: Optional[str] = Field(default=None, min_length=1, description="Bearer token / gRPC metadata required")
    startup_timeout: float = Field(default=600.0, gt=0, description="seconds to wait for every replica")
    max_request_bytes: int = Field(default=4 * 2**20, gt=0, description="largest request body a front end reads")
    replica_link_host: Optional[str] = Field(
        default=None, min_length=1, description="where a replica on another host listens for the router: None, "
        "that host's address as the hostfile names it; '0.0.0.0' every interface of that host")

    @field_validator("deployment_type", mode="before")
    @classmethod
    def _known_deployment_type(cls, value: Any) -> DeploymentType:
        return deployment_type_of(value)

    @model_validator(mode="after")
    def _fill_name(self) -> "MIIConfig":
        if not self.deployment_name:
            self.deployment_name = default_deployment_name(self.model_conf.model_name_or_path)
        if not DEPLOYMENT_NAME_PATTERN.match(self.deployment_name):
            raise ValueError(f"deployment_name {self.deployment_name!r} must be 1-128 letters, digits, '.', '_' "
                             "or '-', starting with a letter or digit (it names a folder and a URL path)")
        return self

    def generate_replica_configs(self) -> list[ReplicaConfig]:
        """MII's: each replica's host, GPUs and ports, stored in ``model_config.replica_configs`` and returned.

        Placement follows ``device_map`` against the hostfile (or this machine); a placement MII refuses
        is a ValueError. Replica configs given by the user are kept when they are what these rules
        give; others are refused, since the launcher places replicas by these rules alone.
        """
        model = self.model_conf
        placements = place_replicas(model.device_map, model.replica_num, model.tensor_parallel, self.hostfile)
        computed = replica_configs(placements, self.port_number, model.tensor_parallel, model.torch_dist_port)
        if model.replica_configs and model.replica_configs != computed:
            raise ValueError(f"replica_configs {[c.model_dump() for c in model.replica_configs]} differ from the "
                             f"placement mii-core launches ({[c.model_dump() for c in computed]}); leave "
                             "replica_configs out and place replicas with device_map, hostfile, port_number "
                             "and torch_dist_port")
        model.replica_configs = computed
        return computed

    def chosen_transports(self) -> list[str]:
        """``transports``, else $MII_CORE_TRANSPORTS, else gRPC (MII's); REST joins when enabled."""
        names = self.transports
        if names is None:
            from_env = [n.strip() for n in os.getenv(TRANSPORTS_ENV, "").split(",") if n.strip()]
            names = from_env or ["grpc"]
        if self.enable_restful_api and "rest" not in names:
            names = [*names, "rest"]
        return list(dict.fromkeys(names))

    def transport_endpoint(self, name: str) -> tuple[str, int]:
        if name in self.transport_ports:
            host = self.restful_api_host if name == "rest" else self.host
            return host, self.transport_ports[name]
        if name == "grpc":
            return self.host, self.port_number
        if name == "rest":
            return self.restful_api_host, self.restful_api_port
        raise ValueError(f"transport '{name}' needs a port: pass transport_ports={{'{name}': PORT}}")


def split_serve_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """MII's rule: each keyword goes to the model options first, then to the deployment options."""
    model, deployment, unknown = {}, {}, []
    deployment_fields = set(MIIConfig.model_fields) - {"model_conf"}
    for key, value in options.items():
        if key in ModelConfig.model_fields:
            model[key] = value
        elif key in deployment_fields:
            deployment[key] = value
        else:
            unknown.append(key)
    return model, deployment, unknown
