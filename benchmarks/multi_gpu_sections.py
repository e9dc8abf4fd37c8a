"""The multi-GPU benchmark's sections (issue 11). multi_gpu.py runs each in a process of its own, stopped at
its time limit, as bench_llama.py runs sections.py:

    python3 benchmarks/multi_gpu_sections.py --ctx CTX.json --section NAME --part PART.json

A section is one engine set-up: its checkpoint, a pipeline at tensor_parallel N (`tp1`, `tp2`, `tp4`,
`moe_tp1`, `moe_tp2`: multi_gpu_rank.py, under the launcher when N > 1), or a deployment through the client
(`serve_r1`, `serve_r2`, `serve_tp2r2`). Each runs the jobs of the runs asked for (ctx args.runs) on the
GPUs it is pinned to; `parity_margin` (`moe_parity_margin`) measures HF's top-1/top-2 margins along the
TP=1 output, reading the outputs from the results JSON written so far.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
os.environ.update(NO_MULTICAST)  # issue 11: in every process started here (children inherit it too)
os.environ.setdefault("TQDM_DISABLE", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import workloads as wls  # noqa: E402
from phases import Phases, stop_group, write_json  # noqa: E402
import sections  # noqa: E402  (its checkpoint section and command line)

RANK_SCRIPT = os.path.join(HERE, "multi_gpu_rank.py")
STOP_S = 20  # kept back from a section's deadline: time to stop the ranks / the deployment and save
# section -> (tensor_parallel, replicas, GPUs), for the pipelines and the deployments
ENGINES = {"tp1": (1, 1, [0]), "tp2": (2, 1, [0, 1]), "tp4": (4, 1, [0, 1, 2, 3]),
           "moe_tp1": (1, 1, [0]), "moe_tp2": (2, 1, [0, 1]),
           "serve_r1": (1, 1, [[0]]), "serve_r2": (1, 2, [[0], [1]]), "serve_tp2r2": (2, 2, [[0, 1], [2, 3]])}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(devices=None, **extra):
    """The environment of a process started here: no multicast, and (on GPUs) only `devices` visible."""
    env = {**os.environ, **NO_MULTICAST, **extra}
    for launcher_var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(launcher_var, None)  # the TP=1 run is not a rank of anything
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, devices))
    return env


def parity_prompts(first_special, tiny):
    """The batch compared token for token: 8 prompts of 16-512 random ids, 64 new tokens (tiny: 4 of 4-24, 12)."""
    rng = random.Random(5678)
    count, lo, hi, new = (4, 4, 24, 12) if tiny else (8, 16, 512, 64)
    return [[rng.randrange(first_special) for _ in range(rng.randint(lo, hi))] for _ in range(count)], [new] * count


def jobs_for(ctx, name):
    """The calls a pipeline section makes, in order, for the runs asked for (as multi_gpu_rank.py's jobs);
    TP=4 only times W2 (issue 11 asks no more of it)."""
    moe, a, runs = name.startswith("moe"), ctx.args, set(ctx.args.runs)
    runs = runs & {"tp_latency"} if name == "tp4" else runs
    ck = ctx.moe if moe else ctx.ckpt
    first = ck["shape"]["bos_token_id"]
    jobs = []
    if runs & ({"mixtral_tp"} if moe else {"tp_parity"}):
        prompts, new = parity_prompts(first, a.tiny)
        jobs.append({"key": "parity", "kind": "tokens", "prompts": prompts, "max_new_tokens": new})
    if not moe and "tp_latency" in runs:
        w2 = wls.make("W2", first, a.tiny)
        jobs.append({"key": "W2", "kind": "latency", "prompts": w2.prompts, "max_new_tokens": w2.max_new_tokens,
                     "repeats": a.w2_repeats})
    if runs & ({"mixtral_tp"} if moe else {"tp_throughput"}):
        w1 = wls.make("W1", first, a.tiny, a.w1_requests)
        jobs.append({"key": "W1", "kind": "throughput", "prompts": w1.prompts, "max_new_tokens": w1.max_new_tokens,
                     "min_s": 10})
    return jobs


def pipeline_section(ph, ctx, name):
    """A pipeline at tensor_parallel N on its GPUs: one process for N = 1, the launcher's N ranks otherwise."""
    from mii_core.distributed.replica_launch import launch_command
    from mii_core.serving.launch import tp_launcher
    tp, _, gpus = ENGINES[name]
    moe = name.startswith("moe")
    jobs = jobs_for(ctx, name)
    if not jobs:
        ph.log(f"{name}: no job for the runs {ctx.args.runs}")
        return
    devices = [] if ctx.args.tiny else gpus
    spec_path, rank_part = (os.path.splitext(ph.part_path)[0] + f".{k}.json" for k in ("spec", "rank0"))
    write_json(spec_path, {"path": (ctx.moe if moe else ctx.ckpt)["path"], "engine_kwargs": ctx.engine_kwargs,
                           "jobs": jobs, "part": rank_part, "t0": ph.t0, "deadline": ph.deadline - STOP_S})
    program = [sys.executable, RANK_SCRIPT, spec_path]
    if tp == 1:
        command, extra = program, {}
    else:
        launcher, executable = tp_launcher()
        command, extra = launch_command(launcher, "localhost", devices, tp, free_port(), program,
                                        executable=executable)
    env = child_env(devices if tp == 1 else None, **extra)
    ph.record(f"{name}.command", {"command": " ".join(command), "devices": devices or "cpu",
                                  "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES")})
    status = run_stoppable(command, env, ph.deadline - STOP_S / 2)
    ph.record(f"{name}.status", status)
    merge_rank0(ph, name, rank_part)
    if status != "ok":
        raise RuntimeError(f"{name}: the rank processes {status}")


def run_stoppable(command, env, deadline):
    """Runs `command` in its own process group; stopped (the whole group) at `deadline`."""
    proc = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        rc = proc.wait(timeout=max(deadline - time.time(), 1))
        return "ok" if rc == 0 else f"exited with code {rc}"
    except subprocess.TimeoutExpired:
        return "stopped at the section's time limit"
    finally:  # also when this section is itself stopped: ranks left behind would hold the GPUs
        stop_group(proc, kill_grace=20)


def merge_rank0(ph, name, rank_part):
    """Rank 0's figures into this section's, under `name.`; its errors and skips too."""
    try:
        with open(rank_part) as f:
            part = json.load(f)
    except (OSError, ValueError) as e:
        ph.part["errors"][f"{name}.results"] = f"no results from rank 0: {type(e).__name__}: {e}"
        return
    for key, value in part["figures"].items():
        ph.part["figures"][f"{name}.{key}"] = value
    ph.part["errors"].update({f"{name}.{k}": v for k, v in part["errors"].items()})
    ph.part["skipped"] += [f"{name}.{k}" for k in part["skipped"]]
    if part.get("running"):
        ph.part["errors"][f"{name}.{part['running']}"] = "stopped at the time limit while this ran"
    ph.save()


def moe_checkpoint_section(ph, ctx):
    import mixtral_checkpoint

    def build():
        ck = mixtral_checkpoint.build(ctx.args.moe_ckpt, ctx.args.tiny, 0, ph.log, removable=[ctx.args.ckpt])
        ph.part["info"]["moe_checkpoint"] = ck
        return {"reused": ck["reused"], "build_s": ck.get("build_s", 0.0), "weight_bytes": ck["weight_bytes"]}
    ph.phase("moe_checkpoint", build)


def serve_section(ph, ctx, name):
    """W1 through the client of a deployment (`replica_num`, `tensor_parallel`, `device_map` pinning GPUs)."""
    import serve_w1
    tp, replicas, device_map = ENGINES[name]
    options = dict(ctx.engine_kwargs, tensor_parallel=tp, replica_num=replicas, transports=[],
                   device_map="auto" if ctx.args.tiny else device_map, deployment_name=f"mgpu-{name}",
                   port_number=serve_w1.free_port_block(4 + replicas), torch_dist_port=serve_w1.rendezvous_port())
    ph.record(f"{name}.options", options)
    w1 = wls.make("W1", ctx.ckpt["shape"]["bos_token_id"], ctx.args.tiny, ctx.args.w1_requests)
    serve_w1.run(ph, name, ctx.ckpt["path"], options, w1, ctx.args.client_concurrency, ph.deadline - STOP_S)


def parity_margin_section(ph, ctx, prefix):
    """HF's top-1/top-2 margins along the TP=1 output of each parity prompt (one forward each)."""
    import hf_margins
    with open(ctx.args.out) as f:
        figures = json.load(f)["figures"]
    ref, other = figures.get(f"{prefix}tp1.parity"), figures.get(f"{prefix}tp2.parity")
    if not (ref and other):
        ph.log(f"{prefix}parity_margin: no parity outputs of both TP=1 and TP=2 to look at")
        return
    ck = ctx.moe if prefix else ctx.ckpt
    prompts, _ = parity_prompts(ck["shape"]["bos_token_id"], ctx.args.tiny)
    ph.phase(f"{prefix}parity_margin", hf_margins.margins, ck["path"], prompts, ref["token_ids"], other["token_ids"],
             ctx.args.tiny)


SECTIONS = {"checkpoint": sections.checkpoint_section, "moe_checkpoint": moe_checkpoint_section,
            "parity_margin": lambda ph, ctx: parity_margin_section(ph, ctx, ""),
            "moe_parity_margin": lambda ph, ctx: parity_margin_section(ph, ctx, "moe_")}
SECTIONS.update({n: (lambda ph, ctx, n=n: pipeline_section(ph, ctx, n)) for n in ("tp1", "tp2", "tp4", "moe_tp1",
                                                                                  "moe_tp2")})
SECTIONS.update({n: (lambda ph, ctx, n=n: serve_section(ph, ctx, n)) for n in ("serve_r1", "serve_r2", "serve_tp2r2")})


class Ctx:
    def __init__(self, d):
        self.args = SimpleNamespace(**d["args"])
        self._ckpt, self._moe = d.get("checkpoint"), d.get("moe_checkpoint")
        self.engine_kwargs = json.loads(self.args.engine_kwargs or "{}")

    @property
    def ckpt(self):
        return self._need(self._ckpt, "checkpoint")

    @property
    def moe(self):
        return self._need(self._moe, "moe_checkpoint")

    @staticmethod
    def _need(ck, section):
        if ck is None:
            raise RuntimeError(f"no checkpoint: the {section} section did not finish (see its status)")
        return ck


def run(name, ctx_dict, part_path):
    """Runs one section here; its part of the results is in part_path afterwards (and after every phase)."""
    ph = Phases(part_path, ctx_dict["t0"], ctx_dict["deadline"])
    ph.save()
    try:
        SECTIONS[name](ph, Ctx(ctx_dict))
    except Exception as e:  # the reason goes into the results, not only into the log
        ph.part["errors"][name] = f"{type(e).__name__}: {e}"[:2000]
        ph.save()
        raise
    return ph.part


def main(argv=None):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: `finally` blocks end what was started
    return sections.main(argv, __doc__, SECTIONS, run)


if __name__ == "__main__":
    sys.exit(main())
