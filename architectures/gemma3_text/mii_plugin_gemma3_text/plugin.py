from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    registry.register("gemma3_text", "mii_plugin_gemma3_text.policy:Gemma3TextPolicy")
