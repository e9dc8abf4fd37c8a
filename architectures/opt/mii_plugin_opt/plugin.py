"""mii-core plugin for OPT checkpoints (HF model_type "opt")."""
from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    # a string target: the policy (and torch) is imported only when an OPT model is loaded
    registry.register("opt", "mii_plugin_opt.policy:OPTPolicy")
