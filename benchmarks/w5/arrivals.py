"""W5's requests: Poisson arrivals at a rate, prompt and output lengths normal with a 30% spread around a
workload's means, prompts as random token ids below the special ids (as W1-W4). Fixed seeds."""

import random
from dataclasses import dataclass

SPREAD = 0.30  # standard deviation as a share of the mean (FastGen's benchmark draws lengths this way)


@dataclass(frozen=True)
class LoadShape:
    name: str
    prompt_mean: int
    output_mean: int


# FastGen's two request mixes; the tiny ones keep prompt + output inside the tiny model's 256 positions
SHAPES = {"1200x128": LoadShape("1200x128", 1200, 128), "512x512": LoadShape("512x512", 512, 512)}
TINY_SHAPES = {"1200x128": LoadShape("1200x128", 48, 8), "512x512": LoadShape("512x512", 24, 24)}


@dataclass(frozen=True)
class Request:
    at_s: float  # when to send it, from the start of the run
    prompt_ids: list
    max_tokens: int


def draw_length(rng, mean):
    """A normal draw around `mean` with a 30% standard deviation, kept within [1, 2 * mean]."""
    return int(min(max(round(rng.gauss(mean, SPREAD * mean)), 1), 2 * mean))


def poisson_times(rng, rate, duration_s):
    """Arrival times of a Poisson process of `rate` per second inside [0, duration_s) (at least one request)."""
    times, t = [], rng.expovariate(rate)
    while t < duration_s or not times:
        times.append(t if t < duration_s else 0.0)
        t += rng.expovariate(rate)
    return times


def make_requests(shape, rate, duration_s, first_special, seed=5, ids_from=""):
    """The requests of one run: Poisson arrivals over duration_s, lengths drawn per request. The token ids
    come from a generator of their own, keyed by ``ids_from`` as well: each front end of one deployment gets the
    same arrivals and lengths but other prompts, since a front end sent the prompts another one just ran would
    find them in the deployment's prefix cache (the H200's gRPC runs, after HTTP's, did until 2026-12-03)."""
    rng = random.Random(f"{shape.name}/{rate}/{seed}")
    ids_rng = random.Random(f"{shape.name}/{rate}/{seed}/ids/{ids_from}")
    requests = []
    for at in poisson_times(rng, rate, duration_s):
        prompt_len, output_len = draw_length(rng, shape.prompt_mean), draw_length(rng, shape.output_mean)
        requests.append(Request(at, [ids_rng.randrange(first_special) for _ in range(prompt_len)], output_len))
    return requests


def all_at_once(prompts, max_new_tokens):
    """W1 through a server: every request sent at time 0."""
    return [Request(0.0, list(p), int(n)) for p, n in zip(prompts, max_new_tokens)]
