"""The serving tests' deployments (real processes on loopback, a private cache), reused here."""

from serving.conftest import chat_checkpoint, demo, deploy, mii_cache  # noqa: F401
