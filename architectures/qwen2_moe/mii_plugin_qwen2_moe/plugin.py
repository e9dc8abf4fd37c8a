from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    registry.register("qwen2_moe", "mii_plugin_qwen2_moe.policy:Qwen2MoePolicy")
