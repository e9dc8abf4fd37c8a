"""mii-server-grpc: the gRPC front end of a mii-core deployment (DeepSpeed-MII's ModelResponse service)."""
