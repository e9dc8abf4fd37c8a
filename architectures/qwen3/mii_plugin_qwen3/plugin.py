from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    registry.register("qwen3", "mii_plugin_qwen3.policy:Qwen3Policy")
