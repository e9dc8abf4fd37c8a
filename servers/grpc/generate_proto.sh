#!/usr/bin/env bash
# Regenerates mii_server_grpc/proto/{modelresponse,legacymodelresponse}_pb2{,_grpc}.py from their .proto files.
# Needs grpcio-tools (pip install grpcio-tools); run from anywhere.
set -euo pipefail
cd "$(dirname "$0")"
for proto in modelresponse legacymodelresponse; do
  python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. "mii_server_grpc/proto/$proto.proto"
done
