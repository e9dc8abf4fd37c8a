"""Compiling the Triton kernels for a GPU on a machine without one: what the CPU runs of the kernel tests launch
(under the interpreter, which checks neither dtypes across a function's returns nor layouts nor PTX) compiled
for NVIDIA sm_90 by Triton's own compiler, down to a cubin with the ptxas it bundles.

Two steps, two processes: the interpreter replaces every ``@triton.jit`` function when TRITON_INTERPRET=1 is
set at import, so the launches are recorded in one (``record_launches``, installed by tests/kernels/conftest.py
when ``MII_RECORD_TRITON_LAUNCHES`` names a file) and compiled in another (``python -m support.gpu_compile
FILE``), where the same functions are Triton's compilable JIT functions.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
          torch.uint8: "u8", torch.int8: "i8", torch.int16: "i16", torch.int32: "i32", torch.int64: "i64",
          torch.bool: "i1", torch.float8_e4m3fn: "fp8e4nv", torch.float8_e5m2: "fp8e5"}
LAUNCH_OPTIONS = ("num_warps", "num_stages")
# constexpr flags a launcher sets only when it runs on an NVIDIA GPU (intrinsics, the hardware's e4m3
# conversion): False under the interpreter, so the launches the CPU tests record never reach the code they
# select. Each recorded launch with one of them False is compiled again with all of them True.
GPU_ONLY_FLAGS = ("NVIDIA", "UNFUSED", "NATIVE_E4M3", "FP6_PTX")
# GPU-only flags whose code does not depend on the rest of the launch (programmatic dependent launch's wait,
# the same two instructions at the top of every kernel): compiled True for one recorded launch of each
# kernel, not for every launch (which doubled the compile check's time)
ONCE_PER_KERNEL_FLAGS = ("PDL",)


def _argument_type(value: Any) -> str:
    """Triton's signature type of a launch argument ("constexpr" for None, as Triton treats it)."""
    if isinstance(value, torch.Tensor):
        return "*" + DTYPES[value.dtype]
    if value is None:
        return "constexpr"
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2 ** 31 <= value < 2 ** 31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"no Triton type for a launch argument {value!r}")


def _is_constexpr(annotation: Any) -> bool:
    return "constexpr" in str(annotation)  # tl.constexpr, or its string under `from __future__ import annotations`


def launch_record(fn, args: tuple, kwargs: dict) -> dict:
    """One launch as plain data: the kernel's module and name, each argument's type or constexpr value, options."""
    import inspect

    params = list(inspect.signature(fn).parameters.values())
    bound = dict(zip([p.name for p in params], args)) | {k: v for k, v in kwargs.items() if k not in LAUNCH_OPTIONS}
    signature, constexprs = {}, {}
    for param in params:
        value = bound.get(param.name, param.default)
        if _is_constexpr(param.annotation) or value is None:
            signature[param.name] = "constexpr"
            constexprs[param.name] = value
        else:
            signature[param.name] = _argument_type(value)
    options = {k: kwargs[k] for k in LAUNCH_OPTIONS if k in kwargs}
    aligned = [param.name for param in params if signature[param.name] != "constexpr"
               and _divisible_by_16(bound.get(param.name, param.default))]
    ones = [param.name for param in params if signature[param.name] in ("i32", "i64")
            and bound.get(param.name, param.default) == 1]
    return {"module": fn.__module__, "name": fn.__name__, "signature": signature, "constexprs": constexprs,
            "options": options, "aligned": aligned, "ones": ones}


def _divisible_by_16(value: Any) -> bool:
    """What a GPU launch specialises on (``tt.divisibility = 16``): a tensor whose address, or an integer
    whose value, is a multiple of 16. The vectorised loads a kernel compiles to depend on it."""
    if isinstance(value, torch.Tensor):
        return value.data_ptr() % 16 == 0
    return isinstance(value, int) and not isinstance(value, bool) and value % 16 == 0


def record_launches(path: Path) -> None:
    """Every interpreted kernel launch of this process appended to ``path`` (JSON lines), then run as usual."""
    from triton.runtime.interpreter import InterpretedFunction

    run = InterpretedFunction.run

    def recording_run(self, *args, grid, warmup, **kwargs):
        with open(path, "a") as out:
            out.write(json.dumps(launch_record(self.fn, args, kwargs)) + "\n")
        return run(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = recording_run


def specialised(kernel, record: dict) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) of ``record`` as a GPU launch specialises them: an integer argument of
    value 1 becomes the constant 1, and ``tt.divisibility = 16`` marks the aligned arguments, except those
    the kernel says not to specialise (``do_not_specialize``)."""
    unspecialised = {kernel.arg_names[i] if isinstance(i, int) else i for i in kernel.do_not_specialize}
    signature, constexprs = dict(record["signature"]), dict(record["constexprs"])
    for name in record.get("ones", []):
        if name not in unspecialised:
            signature[name], constexprs[name] = "constexpr", 1
    attrs = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name in record.get("aligned", [])
             if name not in unspecialised and signature[name] != "constexpr"}
    return signature, constexprs, attrs


def compile_launch(line: str, capability: int = 90) -> str | None:
    """Compiles one recorded launch for NVIDIA ``capability``; None, or what failed and why."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    record = json.loads(line)
    kernel = getattr(importlib.import_module(record["module"]), record["name"])
    try:
        signature, constexprs, attrs = specialised(kernel, record)
        source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
        triton.compile(source, target=GPUTarget("cuda", capability, 32), options=record["options"])
    except Exception as exc:  # noqa: BLE001 - every failure is reported, with its cause
        cause = exc.__cause__ or exc
        return (f"{record['module']}.{record['name']} {record['constexprs']} {record['options']}: "
                f"{type(cause).__name__}: {str(cause)[-1500:]}")
    return None


def with_gpu_flags(line: str) -> str | None:
    """The launch ``line`` with every ``GPU_ONLY_FLAGS`` constexpr it has set True; None if it has none False."""
    record = json.loads(line)
    flags = [name for name in GPU_ONLY_FLAGS if record["constexprs"].get(name) is False]
    if not flags:
        return None
    record["constexprs"].update({name: True for name in flags})
    return json.dumps(record)


def once_per_kernel(lines: list[str]) -> set[str]:
    """For each kernel with a ``ONCE_PER_KERNEL_FLAGS`` constexpr False in some launch, the first such launch
    (in ``lines``' order) with those flags and ``GPU_ONLY_FLAGS`` set True."""
    chosen: dict[str, str] = {}
    for line in lines:
        record = json.loads(line)
        flags = [name for name in ONCE_PER_KERNEL_FLAGS if record["constexprs"].get(name) is False]
        if not flags or record["name"] in chosen:
            continue
        record["constexprs"].update({name: True for name in flags})
        chosen[record["name"]] = with_gpu_flags(json.dumps(record)) or json.dumps(record)
    return set(chosen.values())


def compile_launches(path: Path) -> tuple[int, list[str]]:
    """Each distinct recorded launch compiled for sm_90, one process per core; (how many, the failures)."""
    from concurrent.futures import ProcessPoolExecutor

    recorded = {line.strip() for line in Path(path).read_text().splitlines() if line.strip()}
    variants = {variant for line in recorded if (variant := with_gpu_flags(line))}
    distinct = sorted(recorded | variants | once_per_kernel(sorted(recorded)))
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        failures = [message for message in pool.map(compile_launch, distinct, chunksize=4) if message]
    return len(distinct), failures


if __name__ == "__main__":
    count, failed = compile_launches(Path(sys.argv[1]))
    print(f"{count} distinct launches compiled for sm_90, {len(failed)} failed")
    for message in failed:
        print("FAILED", message)
    sys.exit(1 if failed else 0)
