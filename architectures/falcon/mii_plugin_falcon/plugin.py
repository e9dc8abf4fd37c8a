"""mii-core plugin for Falcon checkpoints (HF model_type "falcon")."""
from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    # a string target: the policy (and torch) is imported only when a Falcon model is loaded
    registry.register("falcon", "mii_plugin_falcon.policy:FalconPolicy")
