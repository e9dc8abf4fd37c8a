"""Programmatic dependent launch (PDL, compute capability 9.0 on): a kernel launched with it may start while
the kernel before it in the stream is still running, so the gap between two kernels (their launch, the
second one's programs getting onto the SMs) overlaps the first one's tail. A decode step at batch 1 is a
chain of about 290 short kernels, so those gaps add up.

The rule every kernel launched early keeps: before it reads anything an earlier kernel wrote, or writes
anything an earlier kernel reads, it waits (``griddepcontrol.wait``: until the kernels before it have
finished and their writes are visible). :func:`pdl_wait` does that first thing in the kernel, before any
load or early return, so every program of it waits and the chain stays ordered even across kernels that do
not launch early (they wait for the whole of the kernel before them, as any launch does). It then lets the
kernel after it launch (``griddepcontrol.launch_dependents``): that one's programs may take free SM slots
and wait there.

``MII_TRITON_PDL``: "1" (the default: on the H200 it took W2 from 4.38 to 4.22 ms a token in bf16, 2.78 to 2.63
in fp8 and 3.39 to 3.24 in wf6af16, twice in one call each; W1 stayed within its noise) or "0"; read at each
launch (a dictionary lookup; a CUDA graph replays its launches without asking again).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from mii_kernels.triton.configs import env_switch
from mii_kernels.triton.e4m3 import has_nvidia_intrinsics
from mii_kernels.triton.hardware import capability

PDL_ENV = "MII_TRITON_PDL"
PDL_CAPABILITY = (9, 0)


def launches_early(x: torch.Tensor) -> bool:
    """Whether a kernel over ``x``'s device launches early: switched on, compiled for an NVIDIA GPU of compute
    capability 9.0 or newer (never under the interpreter, which has no ``griddepcontrol``)."""
    return env_switch(PDL_ENV, "1") and has_nvidia_intrinsics(x) and capability(x.device) >= PDL_CAPABILITY


def pdl_launch(x: torch.Tensor) -> dict:
    """The keywords of a launch over ``x``'s device, for a kernel taking ``PDL``: the constexpr, and Triton's
    ``launch_pdl`` only where it is on (older Triton lacks the option), so the two never disagree."""
    return {"PDL": True, "launch_pdl": True} if launches_early(x) else {"PDL": False}


@triton.jit
def pdl_wait(PDL: tl.constexpr):
    """First thing in a kernel that may be launched early: wait for the kernels before it, then let the next
    one launch. Nothing is emitted when ``PDL`` is off."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
