"""Registers the gRPC front end as transport "grpc"."""
from mii_core import hookimpl


@hookimpl
def mii_core_register_transports(registry):
    registry.register("grpc", "mii_server_grpc.transport:GrpcTransport")
