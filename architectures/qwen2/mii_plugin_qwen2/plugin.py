from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    registry.register("qwen2", "mii_plugin_qwen2.policy:Qwen2Policy")
