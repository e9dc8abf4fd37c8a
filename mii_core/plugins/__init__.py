"""Plugin system: hook specifications, registries and entry-point loading."""
from mii_core.plugins.claims import PluginConflictError
from mii_core.plugins.hookspecs import hookimpl, hookspec
from mii_core.plugins.manager import ENTRY_POINT_GROUP, get_plugins, reset_plugins

__all__ = ["hookimpl", "hookspec", "ENTRY_POINT_GROUP", "PluginConflictError", "get_plugins", "reset_plugins"]
