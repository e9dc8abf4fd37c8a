from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    registry.register("bloom", "mii_plugin_bloom.policy:BloomPolicy")
