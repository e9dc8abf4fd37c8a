from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    registry.register("gemma", "mii_plugin_gemma.policy:GemmaPolicy")
