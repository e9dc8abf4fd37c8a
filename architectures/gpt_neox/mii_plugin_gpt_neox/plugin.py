from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    registry.register("gpt_neox", "mii_plugin_gpt_neox.policy:GPTNeoXPolicy")
