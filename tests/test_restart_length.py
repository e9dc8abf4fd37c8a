"""The model's ``restart_length`` hook: when a sequence reaches that length, the scheduler drops its cache and
recomputes all its tokens as one prompt of that length (what HF's Phi-3 generate does when LongRoPE switches
to its long factors; tests/test_arch_phi3.py checks the family against HF)."""
from mii_core.config.engine import StateManagerConfig
from mii_core.config.generation import GenerationConfig
from mii_core.kv_cache.manager import KVCacheManager
from mii_core.scheduler.sequence import Sequence
from mii_core.scheduler.splitfuse import Scheduler

RESTART_AT = 6  # sequences admitted with a prompt shorter than this are recomputed once they reach it


def restart_length(prompt_length: int):
    return RESTART_AT if prompt_length < RESTART_AT else None


def run_step(scheduler: Scheduler, next_token: int):
    """One step: plan, pretend to compute it, append a sampled token to each finished row."""
    plan = scheduler.schedule()
    for seq in scheduler.commit(plan):
        seq.generated_ids.append(next_token)
    return plan


def test_a_sequence_reaching_its_restart_length_is_recomputed_whole_once():
    limits = StateManagerConfig(kv_block_size=4)
    scheduler = Scheduler(KVCacheManager(16, 4, limits), limits, restart_length=restart_length)
    seq = Sequence(uid=1, prompt_ids=[11, 12, 13], max_new_tokens=10, options=GenerationConfig())
    scheduler.add(seq)
    plans = [run_step(scheduler, next_token=20 + step) for step in range(6)]
    # prompt (3 tokens), decodes at positions 3 and 4, then at 6 tokens the whole sequence as one prompt
    assert [list(p.token_lists[0]) for p in plans[:4]] == [[11, 12, 13], [20], [21], [11, 12, 13, 20, 21, 22]]
    assert [p.prompt_lens[0] for p in plans] == [3, 3, 3, RESTART_AT, RESTART_AT, RESTART_AT]
    assert [p.cached[0] for p in plans[3:]] == [0, 6, 7], "after the restart it decodes on"
    assert scheduler.num_restarts == 1 and scheduler.num_preemptions == 0


def test_without_the_hook_nothing_restarts():
    limits = StateManagerConfig(kv_block_size=4)
    scheduler = Scheduler(KVCacheManager(16, 4, limits), limits)
    seq = Sequence(uid=1, prompt_ids=[11, 12, 13], max_new_tokens=10, options=GenerationConfig())
    scheduler.add(seq)
    plans = [run_step(scheduler, next_token=20) for _ in range(6)]
    assert [len(p.token_lists[0]) for p in plans] == [3, 1, 1, 1, 1, 1]
    assert scheduler.num_restarts == 0
