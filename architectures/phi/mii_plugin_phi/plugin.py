"""mii-core plugin for Phi checkpoints (HF model_type "phi")."""
from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    # a string target: the policy (and torch) is imported only when a Phi model is loaded
    registry.register("phi", "mii_plugin_phi.policy:PhiPolicy")
