"""W5 (serving under load, DeepSpeed-FastGen's method) and W1 through the servers, in one command (issue 21).

    . benchmarks/gpu_setup.sh && python3 benchmarks/bench_serving.py --out $OUT/serving     # H200
    python3 benchmarks/bench_serving.py --tiny --out /tmp/serving-tiny                     # CPU smoke run

Steps, each fail-soft (an error is recorded under `errors` and the run goes on):
  1. the random Llama-3-8B-shaped checkpoint (benchmarks/checkpoint.py; tiny: the toy llama), in a child;
  2. W1 through the pipeline (bench_llama's W1), in a child process, for the servers' ratio;
  3. our deployment (mii_core.serve: OpenAI REST + gRPC): W1's requests all at once through each front end,
     then per workload, front end and rate a Poisson run of --duration-s, from a load generator process;
  4. the peer, `transformers serve --continuous-batching`, on the same runs over HTTP (--peer on).
Under --out: results.json (every request's timestamps), report.md (tables), serving.png (TTFT/TPOT vs rate).
A run that would end past --time-budget-s is skipped and listed under `skipped`.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import checkpoint  # noqa: E402
from phases import write_json  # noqa: E402
from w5 import arrivals, loadgen, processes, report, servers, stats  # noqa: E402
from w5.children import in_child  # noqa: E402
from w5.pipeline_w1 import first_special, pipeline_w1, w1_workload  # noqa: E402

FRONTENDS = ("http", "grpc")
CHILD_TIMEOUT_S = 400  # the checkpoint and the pipeline's W1 (the 8B build takes about a minute on the H200)
WARM_UP_TIMEOUT_S = 240  # a server's first request may set up its batching (the peer's took 40 s on a busy CPU)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "serving"), help="output folder")
    p.add_argument("--tiny", action="store_true", help="the toy llama on the CPU, low rates, short runs")
    p.add_argument("--rates", default=None, help="requests/s to sweep, e.g. 1,2,4,8 (tiny: 1,2)")
    p.add_argument("--peer-rates", default=None, help="the peer's rates (default: --rates)")
    p.add_argument("--duration-s", type=float, default=None, help="arrival window per rate (default 20; tiny 3)")
    p.add_argument("--drain-s", type=float, default=None, help="wait after the window (default 60; tiny 20)")
    p.add_argument("--workloads", default=",".join(arrivals.SHAPES), help="of " + ",".join(arrivals.SHAPES))
    p.add_argument("--frontends", default="http,grpc", help="of http,grpc (the peer has http only)")
    p.add_argument("--peer", choices=("on", "off"), default=None, help="transformers serve too (default: on; tiny off)")
    p.add_argument("--w1", choices=("on", "off"), default="on", help="W1 through the pipeline and the servers")
    p.add_argument("--w1-requests", type=int, default=None, help="default 256 (tiny: 8)")
    p.add_argument("--ckpt", default=None, help="checkpoint folder (default /tmp/llama3-8b-random)")
    p.add_argument("--server-threads", type=int, default=600,
                   help="worker threads of each of our front ends (restful_processes): streams in flight at most")
    p.add_argument("--client-processes", type=int, default=None,
                   help="load generator processes sharing each run's requests (default 4; tiny 1)")
    p.add_argument("--engine-kwargs", default="{}", help="JSON of model options for serve() and the pipeline")
    p.add_argument("--time-budget-s", type=float, default=570.0, help="runs that would end past it are skipped")
    p.add_argument("--py-spy", action="append", default=[], metavar="RUN",
                   help="record our router and replica with py-spy (every thread) during this run, named as the log "
                        "names it, e.g. ours/grpc/512x512@20 (repeatable; needs .whl-serve's py-spy)")
    args = p.parse_args(argv)
    return check_args(p, args)


def check_args(parser, args):
    tiny = args.tiny
    args.rates = rate_list(args.rates or ("1,2" if tiny else "2,4,8,16"))
    args.peer_rates = rate_list(args.peer_rates) if args.peer_rates else args.rates
    args.duration_s = args.duration_s or (3.0 if tiny else 20.0)
    args.drain_s = args.drain_s or (20.0 if tiny else 60.0)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    args.frontends = [f.strip() for f in args.frontends.split(",") if f.strip()]
    args.peer = (args.peer or ("off" if tiny else "on")) == "on"
    args.w1 = args.w1 == "on"
    args.w1_requests = args.w1_requests or (8 if tiny else 256)
    args.ckpt = args.ckpt or ("/tmp/llama-tiny-random" if tiny else "/tmp/llama3-8b-random")
    args.engine_kwargs = json.loads(args.engine_kwargs)
    args.client_processes = args.client_processes or (1 if tiny else 4)
    if args.client_processes < 1:
        parser.error("--client-processes must be at least 1")
    if not set(args.workloads) <= set(arrivals.SHAPES) or not set(args.frontends) <= set(FRONTENDS):
        parser.error(f"--workloads from {list(arrivals.SHAPES)}, --frontends from {list(FRONTENDS)}")
    if not args.rates or not args.peer_rates or min(args.rates + args.peer_rates) <= 0:
        parser.error("--rates must be positive requests/s, e.g. 1,2,4")
    if not isinstance(args.engine_kwargs, dict):
        parser.error("--engine-kwargs must be a JSON object")
    ours = [run_name("ours", f, w, r) for w in args.workloads for f in args.frontends for r in args.rates]
    unknown = [name for name in args.py_spy if name not in ours]
    if unknown:  # a name matching no run would record nothing, silently
        parser.error(f"--py-spy {unknown[0]} names none of our runs; they are {', '.join(ours)}")
    return args


def run_name(system, frontend, workload, rate):
    """A run's name, as the log, the errors and --py-spy name it: ours/grpc/512x512@20."""
    return f"{system}/{frontend}/{workload}@{rate:g}"


def rate_list(text):
    return [float(r) for r in text.split(",") if r.strip()]


PY_SPY_RATE = 100  # samples a second: two processes' every thread, beside the run, without taking its cores


class Bench:
    def __init__(self, args):
        self.args, self.t0 = args, time.time()
        self.pids = {}  # our deployment's {role: pid} while it serves
        self.shapes = arrivals.TINY_SHAPES if args.tiny else arrivals.SHAPES
        self.results = {"args": vars(args), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "w1": {}, "runs": [], "errors": {}, "skipped": []}
        os.makedirs(args.out, exist_ok=True)

    def log(self, message):
        print(f"[serving {time.time() - self.t0:6.1f}s] {message}", flush=True)

    def left_s(self):
        return self.t0 + self.args.time_budget_s - time.time()

    def step(self, name, fn, *args):
        """fn(*args), or None with the error recorded under `name`."""
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - fail-soft: the rest of the run still measures
            self.results["errors"][name] = f"{type(e).__name__}: {e}"[:2000]
            self.log(f"{name} failed: {self.results['errors'][name]}")
            return None
        finally:
            self.save()

    def save(self):
        out = self.args.out
        write_json(os.path.join(out, "results.json"), self.results)
        with open(os.path.join(out, "report.md"), "w") as f:
            f.write(report.markdown(self.results))

    def run(self):
        a = self.args
        if self.step("checkpoint", in_child, CHILD_TIMEOUT_S, checkpoint.build_checkpoint, a.ckpt, a.tiny) is None:
            return self.finish()
        if a.w1:
            self.results["w1"]["pipeline"] = self.step("w1.pipeline", in_child, CHILD_TIMEOUT_S, pipeline_w1,
                                                       a.ckpt, a.engine_kwargs, a.w1_requests, a.tiny)
        start_ours = lambda: servers.start_ours(a.ckpt, a.engine_kwargs, a.server_threads)  # noqa: E731
        self.with_server("ours", start_ours, a.frontends, a.rates, a.w1)
        if a.peer:
            self.with_server("hf_serve", lambda: servers.start_peer(a.ckpt, a.out, a.tiny), ["http"], a.peer_rates,
                             False)
        return self.finish()

    def with_server(self, system, start, frontends, rates, w1):
        self.log(f"{system}: starting")
        started = self.step(f"{system}.start", start)
        if started is None:
            return
        targets, stop = started
        self.pids = processes.deployment_pids(servers.OURS_NAME) if system == "ours" else {}
        try:
            for frontend in frontends:
                self.step(f"{system}.{frontend}.warm_up", self.warm_up, targets[frontend])
                if w1:
                    self.results["w1"][frontend] = self.step(f"w1.{frontend}", self.w1_through, targets[frontend],
                                                             1 + frontends.index(frontend))
            self.sweep(system, targets, frontends, rates)
        finally:
            self.results["errors"].update({f"{system}.stop.{k}": v for k, v in (stop() or {}).items()})
            self.log(f"{system}: stopped")

    def warm_up(self, target):
        """Two short requests, not timed: the first call's set-up stays out of the figures."""
        shape = arrivals.LoadShape("warm", 8, 4)
        records = loadgen.run_load(target, arrivals.make_requests(shape, 100.0, 0.02, first_special(self.args.tiny)),
                                   min(WARM_UP_TIMEOUT_S, max(self.left_s(), 1)), self.args.client_processes)["records"]
        failed = [r["error"] for r in records if r["error"]]
        if failed:
            raise RuntimeError(f"warm-up request failed: {failed[0]}")

    def w1_through(self, target, variant):
        """W1's lengths with token ids of the front end's own (variant): none of them is cached yet."""
        w1 = w1_workload(self.args.w1_requests, self.args.tiny, variant)
        run = loadgen.run_load(target, arrivals.all_at_once(w1.prompts, w1.max_new_tokens), self.left_s(),
                               self.args.client_processes)
        summary = stats.summarize(run["records"], None, run["t0"])
        return {"output_tokens_per_s": summary["output_tokens_per_s"], "seconds": summary["span_s"],
                "requests": summary["sent"], "failed": summary["failed"], "output_tokens": summary["output_tokens"],
                "requested_output_tokens": w1.output_tokens,
                "client_busy": stats.client_busy(run["client_cpu_s"], summary["span_s"])}

    def sweep(self, system, targets, frontends, rates):
        a = self.args
        for workload in a.workloads:
            for frontend in frontends:
                for rate in rates:
                    name = run_name(system, frontend, workload, rate)
                    if self.left_s() < a.duration_s + a.drain_s:
                        self.results["skipped"].append(name)
                        continue
                    self.log(f"{name}: {a.duration_s:g} s of arrivals")
                    self.step(name, self.one_rate, name, system, frontend, workload, rate, targets[frontend])

    def one_rate(self, name, system, frontend, workload, rate, target):
        a = self.args
        requests = arrivals.make_requests(self.shapes[workload], rate, a.duration_s, first_special(a.tiny),
                                          ids_from=frontend)
        spies = (processes.start_py_spy(self.pids, a.out, a.duration_s + a.drain_s, self.spy_prefix(name), gil=False,
                                        rate=PY_SPY_RATE) if name in a.py_spy else [])
        before = {role: processes.cpu_seconds(pid) for role, pid in self.pids.items()}
        run = loadgen.run_load(target, requests, a.duration_s + a.drain_s, a.client_processes)
        summary = stats.summarize(run["records"], rate, run["t0"], a.duration_s)
        summary["client_busy"] = stats.client_busy(run["client_cpu_s"], summary["span_s"])
        summary["server_cpu_s"] = processes.cpu_used(self.pids, before)
        processes.finish_py_spy(spies, a.drain_s + 30)
        self.results["runs"].append({"system": system, "frontend": frontend, "workload": workload, "rate": rate,
                                     "summary": summary, "t0": run["t0"], "records": run["records"]})
        self.log(f"  {summary['completed']}/{summary['sent']} done, {summary['output_tokens_per_s']:.0f} out tok/s, "
                 f"interactive SLA met by {summary['interactive']['share']:.0%}")

    @staticmethod
    def spy_prefix(name):
        """py-spy's file prefix for a run: ours/grpc/512x512@20 -> pyspy-grpc-512x512-20-."""
        return "pyspy-" + name.split("/", 1)[1].replace("/", "-").replace("@", "-") + "-"

    def finish(self):
        self.results["plot"] = report.plot(self.results, os.path.join(self.args.out, "serving.png")) or "serving.png"
        self.save()
        print(report.markdown(self.results), flush=True)
        return self.results


def main(argv=None):
    Bench(parse_args(argv)).run()


if __name__ == "__main__":
    main()
