"""User-facing configuration: model options, engine knobs and generation options (MII's names)."""
from mii_core.config.base import StrictModel, validate_options
from mii_core.config.engine import EngineConfig, KVCacheMemoryConfig, StateManagerConfig
from mii_core.config.generation import GenerationConfig
from mii_core.config.model import ModelConfig

__all__ = [
    "StrictModel", "validate_options", "EngineConfig", "KVCacheMemoryConfig", "StateManagerConfig",
    "GenerationConfig", "ModelConfig",
]
