"""benchmarks/kernel_variants.py: a benchmark phase says which Triton kernel variants it made ready.

No kernel compiles on this CPU machine (Triton needs a GPU target before it reaches the hook), so the tests
call the hook as Triton's ``JITFunction._call_hook`` does: keyword arguments, ``repr`` "NAME[options](args)"."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import kernel_variants  # noqa: E402
import phases  # noqa: E402
import report_md  # noqa: E402

knobs = pytest.importorskip("triton.knobs", reason="triton comes with mii-kernels on Linux only")


def a_launch_missing_the_cache(name):
    """What Triton does when a launch misses the in-memory cache, before compiling; its answer (true: skip)."""
    return knobs.runtime.jit_cache_hook(key="k", repr=f"{name}[num_warps=4](x: *fp32)", fn=None, compile={},
                                        is_manual_warmup=False, already_compiled=False)


def test_a_watch_counts_the_variants_made_inside_it_by_kernel():
    assert kernel_variants.install()
    a_launch_missing_the_cache("_before")
    with kernel_variants.watch() as made:
        for name in ("_decode_kernel", "_decode_kernel", "_gemv"):
            assert a_launch_missing_the_cache(name) is None  # the compile goes ahead
    a_launch_missing_the_cache("_after")
    assert made == {"count": 3, "kernels": {"_decode_kernel": 2, "_gemv": 1}}


def test_a_hook_set_before_is_still_called_and_its_answer_kept(monkeypatch):
    calls = []
    monkeypatch.setattr(kernel_variants, "_installed", [])
    monkeypatch.setattr(knobs.runtime, "jit_cache_hook", lambda **kw: calls.append(kw["repr"]) or True)
    assert kernel_variants.install()
    with kernel_variants.watch() as made:
        assert a_launch_missing_the_cache("_prefill_kernel") is True
    assert calls == ["_prefill_kernel[num_warps=4](x: *fp32)"] and made["count"] == 1


def test_a_phase_records_what_it_made_and_the_report_names_the_timed_ones(tmp_path, capsys):
    assert kernel_variants.install()
    ph = phases.Phases(tmp_path / "part.json", 0.0, float("inf"))
    ph.phase("ours.load", lambda: [a_launch_missing_the_cache("_warm") for _ in range(5)] and {"seconds": 1.0})
    ph.phase("ours.W1", lambda: a_launch_missing_the_cache("_decode_kernel") or {"output_tokens_per_s": 1.0})
    ph.phase("ours.W2", lambda: {"ms_per_token": 1.0})
    saved = json.loads((tmp_path / "part.json").read_text())["info"]["kernel_variants_made"]
    assert saved == {"ours.load": {"count": 5, "kernels": {"_warm": 5}},
                     "ours.W1": {"count": 1, "kernels": {"_decode_kernel": 1}},
                     "ours.W2": {"count": 0, "kernels": {}}}
    assert "ours.W1 made 1 Triton kernel variants ready: _decode_kernel x1" in capsys.readouterr().out
    lines = report_md._variants_made({"kernel_variants_made": saved})
    assert lines[1:] == ["- `ours.W1`: 1 (_decode_kernel)", ""]  # loading compiles by design: not listed
