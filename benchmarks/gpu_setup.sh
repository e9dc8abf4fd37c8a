# Prepares the lent GPU machine for benchmarks/bench_llama.py (and gpu_parity.py, profile_steps.py).
# SOURCE it from the repository root, so that PYTHONPATH stays set in the calling shell:
#
#     . benchmarks/gpu_setup.sh || exit 1        (or `source`; the file is plain POSIX sh)
#
# Needs the `.whl` folder carried with the call (pydantic and its requirements, which the machine lacks;
# nothing can be downloaded there). Installs them into /tmp/site, then our distributions editable.
# No `set -e` here: this file runs inside the caller's shell.

export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
_mii_t0=$(date +%s)
echo "[setup] installing carried wheels: $(ls .whl 2>/dev/null | tr '\n' ' ')"
ls .whl/*.whl >/dev/null 2>&1 || { echo "[setup] no .whl/*.whl: name .whl in the call's carry" >&2; return 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "[setup] wheel install failed" >&2; return 1; }
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
# bench_serving.py's wheels (REST front end, openai client, transformers serve, matplotlib), when carried:
# made by benchmarks/fetch_serving_wheels.sh
if ls .whl-serve/*.whl >/dev/null 2>&1; then
    echo "[setup] installing .whl-serve ($(ls .whl-serve | wc -l) wheels)"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl-serve/*.whl || { echo "[setup] .whl-serve install failed" >&2; return 1; }
fi

# every architecture plugin in the tree (llama today; mixtral and others as they land)
_mii_archs="" _mii_editable="-e . -e kernels"
# the kit's GPT-2 plugin (the supported gpt2 family), the gRPC front end (mii_core.serve needs a
# transport; grpcio/protobuf come with .whl), the REST one (flask/waitress come with .whl-serve) and the MII
# Legacy task plugins (bench_legacy.py)
for _mii_d in architectures/*/ plugins/example-gpt2/ plugins/tasks-text/ plugins/tasks-vision/ servers/grpc/ servers/rest/; do
    [ -f "$_mii_d/pyproject.toml" ] && _mii_archs="$_mii_archs ${_mii_d%/}" && _mii_editable="$_mii_editable -e ${_mii_d%/}"
done
echo "[setup] installing mii-core, kernels,$_mii_archs (editable)"
# shellcheck disable=SC2086
if ! python3 -m pip install -q --no-index --no-deps --no-build-isolation $_mii_editable; then
    # Fallback that needs no build backend: the sources on PYTHONPATH plus hand-written dist-info folders,
    # so that importlib.metadata still finds the plugins' entry points.
    echo "[setup] editable install failed; falling back to PYTHONPATH + generated dist-info" >&2
    python3 - <<'EOF' || return 1
import glob, os, tomllib
for d in [".", "kernels", "servers/grpc", "servers/rest", "plugins/example-gpt2", "plugins/tasks-text", "plugins/tasks-vision"] + sorted(os.path.dirname(p) for p in glob.glob("architectures/*/pyproject.toml")):
    proj = tomllib.load(open(os.path.join(d, "pyproject.toml"), "rb"))["project"]
    name = proj["name"].replace("-", "_")
    info = f"/tmp/site/{name}-{proj['version']}.dist-info"
    os.makedirs(info, exist_ok=True)
    with open(f"{info}/METADATA", "w") as f:
        f.write(f"Metadata-Version: 2.1\nName: {proj['name']}\nVersion: {proj['version']}\n")
    with open(f"{info}/entry_points.txt", "w") as f:
        for group, eps in proj.get("entry-points", {}).items():
            f.write(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n")
    print("[setup] wrote", info)
EOF
    for _mii_d in $_mii_archs; do PYTHONPATH=$PWD/$_mii_d:$PYTHONPATH; done
    export PYTHONPATH=$PWD:$PWD/kernels:$PYTHONPATH
fi

python3 - <<'EOF'
import importlib.metadata as md
import torch, transformers, pydantic
print(f"[setup] torch {torch.__version__} (cuda {torch.version.cuda}, available {torch.cuda.is_available()}), "
      f"transformers {transformers.__version__}, pydantic {pydantic.__version__}")
try:
    import mii_core
    eps = sorted(ep.name for ep in md.entry_points(group="mii_core.plugins"))
    print(f"[setup] mii_core {getattr(mii_core, '__version__', '?')} from {mii_core.__file__}; plugins {eps}")
except Exception as e:
    print(f"[setup] mii_core does not import: {type(e).__name__}: {e}")
EOF
nvidia-smi --query-gpu=name,memory.total --format=csv
echo "[setup] done in $(( $(date +%s) - _mii_t0 ))s"
