"""mii-core: a plugin-based LLM inference engine with DeepSpeed-MII's API.

``mii_core.pipeline(model)`` builds an in-process engine, ``mii_core.serve(model)`` a persistent
deployment (``mii_core.client(name)`` reaches it from any process); architectures, kernels and
transports arrive as plugins (see ``mii_core.plugins.hookspecs``).
"""
from mii_core.config.deployment import MIIConfig
from mii_core.pipeline import Pipeline, pipeline
from mii_core.plugins import hookimpl
from mii_core.response import Response, TokenOutput
from mii_core.serving.client import MIIClient, client
from mii_core.serving.deploy import serve

__version__ = "0.1.0"
__all__ = ["pipeline", "Pipeline", "serve", "client", "MIIClient", "MIIConfig", "Response", "TokenOutput",
           "hookimpl", "__version__"]
