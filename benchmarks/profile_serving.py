"""Where W1 through a deployment spends its time (issue 21, part 2): the same requests through the pipeline and
through one front end of a one-replica deployment, with the CPU seconds each process used while the
deployment served them (client, router with its front ends, replica), and with --py-spy a py-spy profile of
the router and the replica (GIL-holding samples only: what keeps the engine's loop thread waiting).

    python3 benchmarks/profile_serving.py --tiny --out /tmp/profile-serving               # this CPU
    . benchmarks/gpu_setup.sh && python3 benchmarks/profile_serving.py --out $OUT/prof    # the GPU

Prints one table (also OUT/profile.json): seconds and output tok/s for the pipeline and the front end, and
per process its CPU seconds (user + system, from /proc) over the front end's run.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import checkpoint  # noqa: E402
from w5 import arrivals, loadgen, servers, stats  # noqa: E402
from w5.processes import cpu_seconds, deployment_pids, start_py_spy  # noqa: E402
from w5.children import in_child  # noqa: E402
from w5.pipeline_w1 import first_special, pipeline_w1, w1_workload  # noqa: E402
from workloads import Workload  # noqa: E402

CHILD_TIMEOUT_S = 400


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "profile-serving"))
    p.add_argument("--tiny", action="store_true", help="the toy llama on the CPU")
    p.add_argument("--frontend", choices=("grpc", "http"), default="grpc")
    p.add_argument("--requests", type=int, default=None, help="W1's requests (default 256; tiny 64)")
    p.add_argument("--new-tokens", type=int, default=None,
                   help="tiny only: every request's output length (default 64), prompts of 16 tokens")
    p.add_argument("--ckpt", default=None, help="checkpoint folder (default /tmp/llama3-8b-random; tiny: /tmp/llama-tiny-random)")
    p.add_argument("--engine-kwargs", default="{}", help="JSON of keyword options for the pipeline and serve")
    p.add_argument("--server-threads", type=int, default=600)
    p.add_argument("--client-processes", type=int, default=1, help="load generator processes sharing the requests")
    p.add_argument("--py-spy", action="store_true", help="record the router and the replica with py-spy --gil")
    return p.parse_args(argv)


def workload(args):
    if not args.tiny:
        return w1_workload(args.requests, False)
    w1 = w1_workload(args.requests, True)
    return Workload("W1", [(p * 4)[:16] for p in w1.prompts], [args.new_tokens] * len(w1.prompts))


def main(argv=None):
    args = parse_args(argv)
    args.requests = args.requests or (64 if args.tiny else 256)
    args.new_tokens = args.new_tokens or 64
    os.makedirs(args.out, exist_ok=True)
    engine_kwargs = json.loads(args.engine_kwargs)
    path = args.ckpt or ("/tmp/llama-tiny-random" if args.tiny else "/tmp/llama3-8b-random")
    in_child(CHILD_TIMEOUT_S, checkpoint.build_checkpoint, path, args.tiny)
    w1 = workload(args)
    result = {"args": vars(args)}
    if args.tiny:
        result["pipeline"] = in_child(CHILD_TIMEOUT_S, tiny_pipeline, path, engine_kwargs, w1)
    else:
        result["pipeline"] = in_child(CHILD_TIMEOUT_S, pipeline_w1, path, engine_kwargs, args.requests, False)
    name = "profile-serving"
    targets, stop = servers.start_ours(path, engine_kwargs, args.server_threads, deployment_name=name)
    try:
        target = targets[args.frontend]
        warm = arrivals.make_requests(arrivals.LoadShape("warm", 8, 4), 100.0, 0.02, first_special(args.tiny))
        loadgen.run_load(target, warm, 120, args.client_processes)
        pids = deployment_pids(name)
        before = {role: cpu_seconds(pid) for role, pid in pids.items()}
        spies = start_py_spy(pids, args.out, result["pipeline"]["seconds"] * 3 + 10) if args.py_spy else []
        run = loadgen.run_load(target, arrivals.all_at_once(w1.prompts, w1.max_new_tokens), 600, args.client_processes)
        result["cpu_seconds"] = {role: cpu_seconds(pid) - before[role] for role, pid in pids.items()}
        result["cpu_seconds"].update({f"client{i}": secs for i, secs in enumerate(run["client_cpu_s"])})
        for spy in spies:
            spy.wait(timeout=120)
    finally:
        stop()
    summary = stats.summarize(run["records"], None, run["t0"])
    result["server"] = {"seconds": summary["span_s"], "output_tokens_per_s": summary["output_tokens_per_s"],
                        "output_tokens": summary["output_tokens"], "failed": summary["failed"]}
    with open(os.path.join(args.out, "profile.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(table(result, args.frontend))


def tiny_pipeline(path, engine_kwargs, w1):
    import ours
    from phases import throughput
    pipe, _ = ours.start(path, engine_kwargs)
    call = ours.caller(pipe)
    call([p[:8] for p in w1.prompts[:2]], 4)
    return throughput(call, w1)


def table(result, frontend):
    pipe, server = result["pipeline"], result["server"]
    rows = [f"| pipeline | {pipe['seconds']:.2f} | {pipe['output_tokens_per_s']:,.0f} |",
            f"| {frontend} | {server['seconds']:.2f} | {server['output_tokens_per_s']:,.0f} "
            f"({server['output_tokens_per_s'] / pipe['output_tokens_per_s']:.2f}x) |"]
    cpu = ", ".join(f"{role} {secs:.2f}" for role, secs in result.get("cpu_seconds", {}).items())
    return "\n".join(["| W1 | seconds | output tok/s |", "| --- | --- | --- |", *rows, f"CPU seconds: {cpu}"])


if __name__ == "__main__":
    main()
