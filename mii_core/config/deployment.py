"""Deployment options of ``mii_core.serve`` (MII's ``MIIConfig``: its names, defaults, config forms).

MII's options keep their meaning: ``port_number`` is the gRPC front end (MII's load balancer),
``enable_restful_api`` adds the REST front end on ``restful_api_host:restful_api_port``,
``restful_processes`` sizes the REST server (threads here, processes in MII). mii-core adds the
fields below the line; see README "Serving".
"""
from __future__ import annotations

import os
import re
from pathlib import PurePath
from typing import Any, Optional

from pydantic import ConfigDict, Field, model_validator

from mii_core.config.base import StrictModel
from mii_core.config.model import ModelConfig

TRANSPORTS_ENV = "MII_CORE_TRANSPORTS"  # comma-separated transport names, when serve() names none
DEPLOYMENT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def default_deployment_name(model_name_or_path: str) -> str:
    """MII's rule: the model's last path part plus ``-mii-deployment``."""
    return f"{PurePath(str(model_name_or_path).rstrip('/')).name}-mii-deployment"


class MIIConfig(StrictModel):
    # ``model_config`` is MII's key but pydantic's reserved name, so the field is ``model_conf`` (as in MII).
    model_config = ConfigDict(populate_by_name=True)

    deployment_name: str = ""
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

    @model_validator(mode="after")
    def _fill_name(self) -> "MIIConfig":
        if not self.deployment_name:
            self.deployment_name = default_deployment_name(self.model_conf.model_name_or_path)
        if not DEPLOYMENT_NAME_PATTERN.match(self.deployment_name):
            raise ValueError(f"deployment_name {self.deployment_name!r} must be 1-128 letters, digits, '.', '_' "
                             "or '-', starting with a letter or digit (it names a folder and a URL path)")
        return self

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
