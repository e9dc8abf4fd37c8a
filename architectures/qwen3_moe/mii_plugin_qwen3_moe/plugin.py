from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    registry.register("qwen3_moe", "mii_plugin_qwen3_moe.policy:Qwen3MoePolicy")
