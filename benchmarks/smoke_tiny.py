"""CPU smoke run of the whole benchmark (bench_llama.py --tiny): every section at toy shapes.

    python benchmarks/smoke_tiny.py [--stub] [extra bench_llama args]

Uses the real mii_core when `mii_core.pipeline` imports (run from the repo root with the project installed,
or PYTHONPATH=.:kernels:architectures/llama), else, or with --stub, the stand-in of stub_engine.py. Exits
non-zero when a section failed or a figure is missing, so that it can gate a change to benchmarks/.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

OUT = "/tmp/bench-tiny.json"
EXPECTED = ("ceilings", "ceilings.decode_chain", "ours.W1", "ours.W2", "ours.W3", "hf_generate.W1",
            "hf_generate.W2", "hf_generate.W3", "hf_cb.W1", "hf_static.W2", "hf_generate.moe_W1")


def main():
    argv = sys.argv[1:]
    use_stub = "--stub" in argv
    argv = [a for a in argv if a != "--stub"]
    if not use_stub:
        try:
            import mii_core
            mii_core.pipeline  # noqa: B018
            print("smoke: using the real mii_core", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"smoke: mii_core.pipeline not importable ({type(e).__name__}: {e}); using the stub", flush=True)
            use_stub = True
    import bench_llama
    rc = bench_llama.main(["--tiny", "--out", OUT, "--moe-peer-alone"] + (["--stub-engine"] if use_stub else [])
                          + argv)
    with open(OUT) as f:
        res = json.load(f)
    missing = [k for k in EXPECTED if k not in res["figures"]]
    bad = {n: s["status"] for n, s in res["sections"].items() if s["status"] != "ok"}
    print(f"smoke: rc={rc}; sections not ok: {bad or 'none'}; errors: {list(res['errors']) or 'none'}; "
          f"missing figures: {missing or 'none'}", flush=True)
    return 1 if rc or bad or missing or res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
