"""vLLM's priority scheduling (``state_manager.scheduling_policy="priority"``, a request's ``priority``, lower
first): the waiting queue's order and the running sequence preempted first, worked out by hand on the
scheduler with a real KV-cache manager; then the order requests finish in through the pipeline; and a
first-come-first-served engine refusing a priority it would not honour."""
import pytest

from mii_core.config.engine import StateManagerConfig
from mii_core.kv_cache.manager import KVCacheManager
from mii_core.requests import generation_options
from mii_core.scheduler.sequence import Sequence, SequenceStatus
from mii_core.scheduler.splitfuse import Scheduler

BLOCK = 4


def scheduler(policy: str, blocks: int) -> Scheduler:
    limits = StateManagerConfig(scheduling_policy=policy)
    return Scheduler(KVCacheManager(blocks, BLOCK, limits), limits)


def sequence(uid: int, prompt_length: int, priority: int = 0) -> Sequence:
    options = generation_options({"max_new_tokens": 4, "priority": priority})
    return Sequence(uid, list(range(1, prompt_length + 1)), 4, options)


@pytest.mark.parametrize("policy, expected", [("fcfs", [10, 11, 12, 13]), ("priority", [11, 13, 12, 10])])
def test_the_waiting_queue_is_in_arrival_or_priority_order(policy, expected):
    sched = scheduler(policy, blocks=64)
    # priorities 2, 0, 1, 0 in arrival order: by priority then arrival that is 11, 13, 12, 10
    for uid, priority in zip([10, 11, 12, 13], [2, 0, 1, 0] if policy == "priority" else [0] * 4):
        sched.add(sequence(uid, 3, priority))
    assert [seq.uid for seq in sched.waiting] == expected
    plan = sched.schedule()  # room for all: admitted (and planned) in that order
    assert list(plan.uids) == expected


@pytest.mark.parametrize("policy, preempted", [("fcfs", 2), ("priority", 1)])
def test_the_sequence_preempted_first(policy, preempted):
    """Two 8-token prompts fill the 4 blocks; each one's next token needs a fifth. First come first served
    preempts the newest (uid 2); the priority policy the one of lowest priority (uid 1, priority 5,
    though it came first)."""
    sched = scheduler(policy, blocks=4)
    sched.add(sequence(1, 8, priority=5 if policy == "priority" else 0))
    sched.add(sequence(2, 8, priority=0))
    first = sched.schedule()
    assert sorted(first.uids) == [1, 2] and sched.kv.free_blocks == 0
    for seq in sched.commit(first):
        seq.generated_ids.append(7)  # each prompt's sampled token, to be decoded next
    second = sched.schedule()
    assert [seq.uid for seq in second.preempted] == [preempted]
    assert [seq.uid for seq in sched.running] == [3 - preempted]
    assert next(s for s in sched.waiting if s.uid == preempted).status is SequenceStatus.WAITING


def test_requests_finish_in_priority_order_through_the_pipeline(checkpoint, pipeline):
    # one sequence per forward pass: a request admitted runs to its end before the next is admitted
    engine = {"state_manager": {"scheduling_policy": "priority", "max_ragged_sequence_count": 1}}
    pipe = pipeline(checkpoint("gqa"), inference_engine_config=engine)
    priorities = [2, 0, 1, 0]
    options = [generation_options({"max_new_tokens": 4, "do_sample": False, "ignore_eos": True, "priority": p})
               for p in priorities]
    finished = []
    pipe.submit(["the river", "a quiet town", "seven small", "under the bridge"], options).result(
        on_finish=finished.append)
    assert finished == [1, 3, 2, 0]


def test_a_first_come_first_served_engine_refuses_a_priority(checkpoint, pipeline):
    pipe = pipeline(checkpoint("gqa"))
    with pytest.raises(ValueError, match="priority takes effect only .*scheduling_policy"):
        pipe("the river", max_new_tokens=2, priority=3)
    assert pipe("the river", max_new_tokens=2, priority=0)[0].generated_length == 2  # 0 is every request's


def test_an_unknown_policy_names_the_choices():
    with pytest.raises(ValueError, match="fcfs.*priority"):
        StateManagerConfig(scheduling_policy="lifo")
