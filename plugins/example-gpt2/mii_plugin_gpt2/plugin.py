"""The hook mii-core calls once at start-up: name the model types this plugin serves."""
from mii_core import hookimpl


@hookimpl
def mii_core_register_architectures(registry):
    # a "module:Class" string: the policy (and torch) is imported only when a GPT-2 checkpoint is loaded
    registry.register("gpt2", "mii_plugin_gpt2.policy:GPT2Policy")
