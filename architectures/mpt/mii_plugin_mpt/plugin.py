from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    registry.register("mpt", "mii_plugin_mpt.policy:MptPolicy")
