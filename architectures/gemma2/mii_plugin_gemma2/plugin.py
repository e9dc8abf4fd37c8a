from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    registry.register("gemma2", "mii_plugin_gemma2.policy:Gemma2Policy")
