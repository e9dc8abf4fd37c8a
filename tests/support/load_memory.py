"""Loads one tensor-parallel rank's weights in a fresh process and prints what it cost, as JSON:
parameter bytes, checkpoint bytes read, and the growth of resident memory while building the model and
loading it: the peak of private (anonymous) memory, sampled every millisecond, which is what the
parameters and any temporary copies take, and the peak of all resident memory (VmHWM), which also counts
the checkpoint's file pages mapped while reading (shared page cache; the kernel maps up to 64 KiB around
each page touched, and a column slice touches every page of a narrow row).

    python load_memory.py CHECKPOINT RANK WORLD_SIZE

No process group is needed: loading only reads this rank's slices (nothing is exchanged between ranks).
"""
from __future__ import annotations

import json
import sys
import threading
from pathlib import Path


def status_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        name, value = line.split(":", 1)
        if name == field:
            return int(value.split()[0])
    raise KeyError(field)


class PeakSampler(threading.Thread):
    """The highest RssAnon seen while running (the kernel keeps no peak of it)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = status_kib("RssAnon")
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.001):
            self.peak = max(self.peak, status_kib("RssAnon"))

    def stop(self) -> int:
        self.done.set()
        self.join()
        return max(self.peak, status_kib("RssAnon"))


def main() -> None:
    path, rank, world_size = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    import torch

    from mii_core.engine.builder import load_policy
    from mii_core.loading.weights import load_weights
    from mii_core.model.ops import KernelSet
    from mii_core.distributed.parallel_context import ParallelContext
    from mii_core.plugins import get_plugins

    policy = load_policy(path)
    kernels = KernelSet("cpu", get_plugins().kernels)
    # the peak counter starts here: everything imported, nothing of the model allocated yet
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before, anon_before = status_kib("VmRSS"), status_kib("RssAnon")
    sampler = PeakSampler()
    sampler.start()
    model = policy.build_model(ParallelContext(rank, world_size), kernels, torch.device("cpu"), torch.float32)
    counter = load_weights(model, policy, path, show_progress=False)
    anon_peak = sampler.stop()
    print(json.dumps({
        "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "bytes_read": counter.bytes_read, "checkpoint_bytes": counter.checkpoint_bytes,
        "peak_anon_growth": (anon_peak - anon_before) * 1024,
        "peak_rss_growth": (status_kib("VmHWM") - before) * 1024,
    }))


if __name__ == "__main__":
    main()
