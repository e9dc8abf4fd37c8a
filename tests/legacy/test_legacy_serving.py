"""Serving behaviour of mii_core.legacy: 32 concurrent clients share forward passes and each gets its own
answer, a bad query fails only itself (in preparation or inside a batch), bad deployments are clear
errors naming what is installed, and the task registry's rules."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import transformers

import mii_core.legacy as mii
from mii_core.legacy.batcher import DynamicBatcher, bucket_length
from mii_core.legacy.task import Prepared, QueryError, TaskModel
from mii_core.plugins.registries import TaskRegistry


def test_32_concurrent_clients_each_get_their_own_answer(encoder):
    folder = encoder("bert", "fill-mask")
    handle = mii.deploy(task="fill-mask", model=str(folder), deployment_name="concurrent",
                        deployment_type="non-persistent", mii_config={"batch_wait_ms": 50.0})
    try:
        hf = transformers.pipeline("fill-mask", model=str(folder), tokenizer=str(folder), device="cpu")
        words = ["paris", "france", "capital", "city", "model", "fox", "dog", "movie"]
        texts = [f"the {words[i % 8]} is {'very ' * (i % 5)}[MASK] today." for i in range(32)]
        barrier = threading.Barrier(32)

        def client(text):
            barrier.wait()  # all 32 at once, so the batcher must keep their answers apart
            return handle.query({"query": text}).response

        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(client, texts))
        for text, answer in zip(texts, answers):
            expected = hf(text)
            assert [a["token"] for a in answer] == [e["token"] for e in expected]
            assert [a["score"] for a in answer] == pytest.approx([e["score"] for e in expected], abs=1e-5)
        batcher = mii.api.get_deployment("concurrent").batcher
        assert max(batcher.batch_sizes) > 1  # queries really shared forward passes
    finally:
        mii.terminate("concurrent")


class Doubler(TaskModel):
    """A stand-in model: answers 2·x, and its forward pass breaks on any batch holding x = 13."""

    required_keys = ("x",)

    def __init__(self):
        super().__init__("double")
        self.shapes = []

    @classmethod
    def load(cls, model_dir, *, task, device, dtype):
        return cls()

    @property
    def max_length(self):
        return 64

    def prepare(self, query, options):
        return Prepared(length=query["x"] % 40 + 1, data=query["x"])

    def collate(self, prepared, pad_to):
        self.shapes.append((len(prepared), pad_to))
        return [p.data for p in prepared]

    def run(self, batch):
        if 13 in batch:
            raise RuntimeError("unlucky number in the batch")
        return [2 * x for x in batch]

    def respond(self, prepared, outputs, row):
        if prepared.data == 7:
            raise ValueError("seven has no answer")
        return outputs[row]


def test_a_query_that_breaks_the_batch_or_its_response_fails_alone():
    model = Doubler()
    batcher = DynamicBatcher(model, max_batch_size=64, wait_s=0.2, buckets=[8, 16, 32])
    try:
        futures = {x: batcher.submit(model.prepare({"x": x}, {})) for x in range(20)}
        for x, future in futures.items():
            if x == 13:
                with pytest.raises(RuntimeError, match="unlucky"):
                    future.result()
            elif x == 7:
                with pytest.raises(ValueError, match="seven"):
                    future.result()
            else:
                assert future.result() == 2 * x
        assert model.shapes[0] == (20, 32)  # one batch first, padded to the bucket of its longest (20 tokens)
        assert all(n == 1 for n, _ in model.shapes[1:])  # then one by one after it failed
    finally:
        batcher.close()


def test_a_lone_client_pays_the_batch_wait_once_then_runs_at_once():
    model = Doubler()
    batcher = DynamicBatcher(model, max_batch_size=64, wait_s=2.0, buckets=[8, 16, 32])
    try:
        started = time.monotonic()
        assert batcher.submit(model.prepare({"x": 1}, {})).result() == 2  # the first batch waits (2 s)
        assert time.monotonic() - started >= 2.0
        started = time.monotonic()
        for x in range(30, 40):  # one client, one query at a time: ten batches of one, none waiting
            assert batcher.submit(model.prepare({"x": x}, {})).result() == 2 * x
        assert time.monotonic() - started < 2.0  # ten waits would be 20 s (a margin for a loaded machine)
        futures = [batcher.submit(model.prepare({"x": x}, {})) for x in range(40, 50)]  # load again
        assert [f.result() for f in futures] == [2 * x for x in range(40, 50)]
        assert batcher.batch_sizes[:11] == [1] * 11 and max(batcher.batch_sizes[11:]) > 1
    finally:
        batcher.close()


def test_bucket_lengths():
    assert [bucket_length(n, [8, 16, 64]) for n in (1, 8, 9, 16, 17, 64)] == [8, 8, 16, 16, 64, 64]
    with pytest.raises(ValueError, match="exceed"):
        bucket_length(65, [8, 16, 64])


def test_bad_queries_name_the_key_and_task_and_the_deployment_keeps_serving(encoder):
    folder = encoder("bert", "question-answering")
    handle = mii.deploy(task="question-answering", model=str(folder), deployment_name="qa-bad",
                        deployment_type="non-persistent")
    try:
        with pytest.raises(QueryError, match=r"question-answering query has no 'context' key"):
            handle.query({"question": "Who?"})
        with pytest.raises(QueryError, match=r"unknown question-answering option\(s\) \['topk'\]"):
            handle.query({"question": "Who?", "context": "Ann did."}, topk=2)
        with pytest.raises(QueryError, match="at most"):
            handle.query({"question": "Who?", "context": "word " * 200})
        assert handle.query({"question": "Who?", "context": "Ann did it in Paris."}).response["answer"]
    finally:
        mii.terminate("qa-bad")


def test_fill_mask_without_a_mask_fails_alone(encoder):
    folder = encoder("bert", "fill-mask")
    handle = mii.deploy(task="fill-mask", model=str(folder), deployment_name="fm-bad",
                        deployment_type="non-persistent", mii_config={"batch_wait_ms": 50.0})
    try:
        queries = [{"query": "no mask here."}] + [{"query": "the [MASK] is here."}] * 4
        with ThreadPoolExecutor(5) as pool:
            futures = [pool.submit(handle.query, q) for q in queries]
        with pytest.raises(QueryError, match=r"no mask token '\[MASK\]'"):
            futures[0].result()
        assert all(len(f.result().response) == 5 for f in futures[1:])
    finally:
        mii.terminate("fm-bad")


def test_deploy_errors_name_what_is_installed(encoder):
    folder = str(encoder("bert", "fill-mask"))
    with pytest.raises(ValueError, match=r"unknown task 'fill_mask'.*fill-mask.*'tasks-text'"):
        mii.deploy(task="fill_mask", model=folder, deployment_name="x", deployment_type="non-persistent")
    with pytest.raises(ValueError, match=r"mii_config.*batch_wait"):
        mii.deploy(task="fill-mask", model=folder, deployment_name="x", deployment_type="non-persistent",
                   mii_config={"batch_wait": 3})
    with pytest.raises(ValueError, match=r"unknown task 'fill_mask'"):  # local (the default): before any process
        mii.deploy(task="fill_mask", model=folder, deployment_name="x")
    with pytest.raises(ValueError, match="'aml' is not supported"):
        mii.deploy(task="fill-mask", model=folder, deployment_name="x", deployment_type="aml")
    with pytest.raises(ValueError, match="no legacy deployment named 'x'"):
        mii.mii_query_handle("x")


def test_a_model_type_no_task_plugin_serves_names_the_installed_plugins(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    with pytest.raises(ValueError, match=r"task 'fill-mask' for model_type 't5'.*installed task plugins: "
                                         r"'tasks-text' \(feature-extraction: bert/distilbert"):
        mii.deploy(task="fill-mask", model=str(tmp_path), deployment_name="t5", deployment_type="non-persistent")


def test_task_registry_rules():
    registry = TaskRegistry()
    registry.current_plugin = "a"
    registry.register("sentiment", "pkg.mod:A", model_types=("bert", "roberta"))
    registry.current_plugin = "b"
    registry.register("sentiment", "pkg.mod:B", model_types=("roberta",), priority=1)
    assert registry.served_for("sentiment", "bert").plugin == "a"
    assert registry.served_for("sentiment", "roberta").plugin == "b"  # higher priority wins per model type
    assert registry.tasks() == ["sentiment"] and registry.model_types("sentiment") == ["bert", "roberta"]
    with pytest.raises(TypeError, match="model_types"):
        registry.register("sentiment", "pkg.mod:B", model_types="bert")
    with pytest.raises(ValueError, match="twice"):
        registry.register("sentiment", "pkg.mod:B", model_types=("roberta",))
    registry.forget_plugin("b")
    assert registry.served_for("sentiment", "roberta").plugin == "a"


def test_text_generation_goes_to_the_fastgen_pipeline(checkpoint, oracle):
    folder = checkpoint()  # a tiny llama: an architecture plugin serves it
    handle = mii.deploy(task="text-generation", model=str(folder), deployment_name="gen",
                        deployment_type="non-persistent")
    try:
        prompts = ["Hello world", "DeepSpeed is"]
        result = handle.query({"query": prompts}, max_new_tokens=6, do_sample=False)
        assert result.response == [oracle(folder).greedy(p, 6).text for p in prompts]
        with pytest.raises(QueryError, match="text-generation query has no 'query' key"):
            handle.query({"prompt": "x"})
    finally:
        mii.terminate("gen")
