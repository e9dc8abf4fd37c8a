from mii_core.plugins import hookimpl


@hookimpl
def mii_core_register_architectures(registry) -> None:
    # a string target: the policy (and torch) is imported only when a Llama model is loaded
    registry.register("llama", "mii_plugin_llama.policy:LlamaPolicy")
