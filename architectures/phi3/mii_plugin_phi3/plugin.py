from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    registry.register("phi3", "mii_plugin_phi3.policy:Phi3Policy")
