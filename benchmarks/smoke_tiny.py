"""CPU smoke run of the whole benchmark (bench_llama.py --tiny): every section at toy shapes, then the family
rows' sections (issue 17), which run only when named, in a second run of their own.

    python benchmarks/smoke_tiny.py [--stub] [extra bench_llama args]

Uses the real mii_core when `mii_core.pipeline` imports (run from the repo root with the project installed,
or PYTHONPATH=.:kernels:architectures/llama), else, or with --stub, the stand-in of stub_engine.py. Exits
non-zero when a section failed or a figure is missing, so that it can gate a change to benchmarks/.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

OUT, FAMILIES_OUT = "/tmp/bench-tiny.json", "/tmp/bench-tiny-families.json"
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
    import families
    stub = ["--stub-engine"] if use_stub else []
    rc = bench_llama.main(["--tiny", "--out", OUT, "--moe-peer-alone"] + stub + argv)
    rc |= bench_llama.main(["--tiny", "--out", FAMILIES_OUT, "--sections", "ceilings," + ",".join(families.FAMILIES)]
                           + stub)
    expected = {OUT: EXPECTED,  # under the stub, ours.<family>_W1 holds "not available" (no plugin registry)
                FAMILIES_OUT: [f.figure(system) for f in families.FAMILIES.values() for system in ("ours", "hf_generate")]}
    failed = False
    for out, keys in expected.items():
        with open(out) as f:
            res = json.load(f)
        missing = [k for k in keys if k not in res["figures"]]
        bad = {n: s["status"] for n, s in res["sections"].items() if s["status"] != "ok"}
        print(f"smoke {out}: rc={rc}; sections not ok: {bad or 'none'}; errors: {list(res['errors']) or 'none'}; "
              f"missing figures: {missing or 'none'}", flush=True)
        failed |= bool(bad or missing or res["errors"])
    return 1 if rc or failed else 0


if __name__ == "__main__":
    sys.exit(main())
