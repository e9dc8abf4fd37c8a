#!/bin/sh
# Fetches, on this machine, the wheels benchmarks/bench_serving.py needs on the GPU machine (python 3.12,
# torch, transformers, nothing downloadable there) into the git-ignored folder .whl-serve/:
#   - the REST front end (Flask, waitress, Prometheus' client),
#   - the load generator's client (openai, with httpx2 underneath from openai 3; httpx beside it),
#   - the peer, `transformers serve` (FastAPI, uvicorn, accelerate for its device_map; it also needs openai),
#   - matplotlib for the plot,
#   - py-spy for benchmarks/profile_serving.py --py-spy (a static binary: lands in /tmp/site/bin).
# pydantic, grpcio and protobuf come with .whl/ (benchmarks/RESULTS.md). Torch's own requirements (jinja2,
# MarkupSafe), numpy and packaging are on the machine and not fetched. Versions are those the CI venv runs.
# Run from the repository root:   sh benchmarks/fetch_serving_wheels.sh
# then carry both folders: carry [".whl", ".whl-serve"] (64 MiB per call in all: the total is printed).
set -eu
cd "$(dirname "$0")/.."
P="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
P="$P --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64"
REST="flask==3.1.3 werkzeug==3.1.9 itsdangerous==2.2.0 blinker==1.9.0 click==8.5.1 waitress==3.0.2
      prometheus-client==0.26.0"
CLIENT="openai==3.57.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 h11==0.16.0 anyio==4.16.0
        sniffio==1.3.1 idna==3.20 jiter==0.19.0 httpx==0.28.1 httpcore==1.0.9 certifi==2026.10.19.post1"
PEER="fastapi==0.165.0 starlette==1.10.0 annotated-doc==0.0.7 opentelemetry-api==1.45.2 uvicorn==0.54.0
      accelerate==1.15.0 psutil==7.2.2"
PLOT="matplotlib==3.11.2 contourpy==1.3.3 cycler==0.12.1 fonttools==4.68.0 kiwisolver==1.5.1 pillow==13.0.0
      pyparsing==3.3.3 python-dateutil==4.0.0 tzdata==2026.6"
PROFILE="py-spy==0.4.3"
mkdir -p .whl-serve
for n in $REST $CLIENT $PEER $PLOT $PROFILE; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      $P -d .whl-serve "$n"
done
echo "[fetch] .whl-serve: $(du -sh .whl-serve | cut -f1), with .whl: $(du -shc .whl .whl-serve 2>/dev/null | tail -1 | cut -f1)"
