#!/usr/bin/env bash
# Regenerates mii_server_grpc/proto/modelresponse_pb2{,_grpc}.py from modelresponse.proto.
# Needs grpcio-tools (pip install grpcio-tools); run from anywhere.
set -euo pipefail
cd "$(dirname "$0")"
python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. mii_server_grpc/proto/modelresponse.proto
