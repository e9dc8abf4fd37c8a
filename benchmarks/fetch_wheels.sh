#!/bin/sh
# Fetches, on this machine, the wheels every GPU script needs (python 3.12 there, with torch, transformers,
# triton, safetensors, pluggy, tqdm, numpy, but nothing downloadable) into the git-ignored folder .whl/:
#   - pydantic and its requirements (mii_core's config),
#   - pytest (benchmarks/gpu_checks.sh runs the kernel and parity tests with it),
#   - grpcio and protobuf at the versions our generated gRPC modules need, msgpack (replica pipes),
#   - compressed-tensors and loguru (tests/test_prequantized.py's compressed-tensors cases),
#   - diffusers and its pure-Python requirements (benchmarks/bench_legacy.py's Stable Diffusion).
# Versions are those the CI venv runs. Run from the repository root:   sh benchmarks/fetch_wheels.sh
# then carry it: carry [".whl"] (with .whl-serve from fetch_serving_wheels.sh, 64 MiB per call in all).
set -eu
cd "$(dirname "$0")/.."
P="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
CORE="pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
      typing-extensions==4.16.0"
TEST="pytest==9.2.0 iniconfig==2.3.1"
RPC="grpcio==1.85.3 protobuf==7.36.2 msgpack==1.2.4"
QUANT="compressed-tensors==0.20.1 loguru==0.7.3"
LEGACY="diffusers==0.42.1 importlib-metadata==8.9.0 zipp==4.1.2 pillow==13.0.0 requests==2.34.2
        urllib3==2.8.0 idna==3.20 certifi==2026.10.19.post1"
mkdir -p .whl
for n in $CORE $TEST $RPC $QUANT $LEGACY; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      $P -d .whl "$n"
done
echo "[fetch] .whl: $(du -sh .whl | cut -f1)"
