from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    registry.register("starcoder2", "mii_plugin_starcoder2.policy:Starcoder2Policy")
