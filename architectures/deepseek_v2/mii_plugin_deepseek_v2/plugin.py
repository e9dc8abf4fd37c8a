"""mii-core plugin for DeepSeek-V2 / DeepSeek-V2-Lite checkpoints (HF model_type "deepseek_v2")."""
from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    registry.register("deepseek_v2", "mii_plugin_deepseek_v2.policy:DeepseekV2Policy")
