"""mii-core plugin for GPT-Neo checkpoints: GPT-Neo 125M, 1.3B, 2.7B (HF model_type "gpt_neo")."""
from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    registry.register("gpt_neo", "mii_plugin_gpt_neo.policy:GPTNeoPolicy")
