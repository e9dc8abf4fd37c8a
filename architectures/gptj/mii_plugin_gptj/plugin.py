"""mii-core plugin for GPT-J checkpoints: GPT-J-6B and its fine-tunes (HF model_type "gptj")."""
from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    registry.register("gptj", "mii_plugin_gptj.policy:GPTJPolicy")
