"""mii-core: a plugin-based LLM inference engine with DeepSpeed-MII's API.

``mii_core.pipeline(model)`` builds an in-process engine; architectures, kernels and transports
arrive as plugins (see ``mii_core.plugins.hookspecs``).
"""
from mii_core.pipeline import Pipeline, pipeline
from mii_core.plugins import hookimpl
from mii_core.response import Response, TokenOutput

__version__ = "0.1.0"
__all__ = ["pipeline", "Pipeline", "Response", "TokenOutput", "hookimpl", "__version__"]
