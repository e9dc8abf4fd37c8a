from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    registry.register("mistral", "mii_plugin_mistral.policy:MistralPolicy")
