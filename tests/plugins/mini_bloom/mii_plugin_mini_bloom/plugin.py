"""mii-core plugin for HF Bloom checkpoints (model_type "bloom")."""
from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    # mii-core ships a Bloom plugin too (architectures/bloom): a priority above its 0 makes this one serve
    registry.register("bloom", "mii_plugin_mini_bloom.policy:BloomPolicy", priority=10)
