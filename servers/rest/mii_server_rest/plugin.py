"""Registers the REST front end as transport "rest"."""
from mii_core import hookimpl


@hookimpl
def mii_core_register_transports(registry):
    registry.register("rest", "mii_server_rest.transport:RestTransport")
