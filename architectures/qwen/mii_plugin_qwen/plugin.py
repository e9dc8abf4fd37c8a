"""mii-core plugin for Qwen (v1) checkpoints (HF model_type "qwen")."""
from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    # a string target: the policy (and torch, tiktoken) is imported only when a Qwen model is loaded
    registry.register("qwen", "mii_plugin_qwen.policy:QwenPolicy")
