from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    registry.register("mixtral", "mii_plugin_mixtral.policy:MixtralPolicy")
