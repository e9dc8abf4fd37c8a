"""User-facing configuration: model options, engine knobs, generation and deployment options (MII's names).

``MIIConfig``, ``ReplicaConfig`` and ``DeploymentType`` are where MII keeps them (``mii.config``).
"""
from mii_core.config.base import StrictModel, validate_options
from mii_core.config.deployment import DeploymentType, MIIConfig
from mii_core.config.engine import EngineConfig, KVCacheMemoryConfig, StateManagerConfig
from mii_core.config.generation import GenerationConfig
from mii_core.config.model import ModelConfig
from mii_core.config.replicas import ReplicaConfig

__all__ = [
    "StrictModel", "validate_options", "EngineConfig", "KVCacheMemoryConfig", "StateManagerConfig",
    "GenerationConfig", "ModelConfig", "MIIConfig", "ReplicaConfig", "DeploymentType",
]
