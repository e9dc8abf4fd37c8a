"""lm-evaluation-harness against a deployment, as its users run it: ``lm_eval.simple_evaluate`` with the
stock ``local-completions`` model (token-id prompts, batched requests) on a local custom task of a few lines
(a ``multiple_choice`` task and a ``generate_until`` task over tiny JSON-lines files, no network). The
loglikelihoods lm-eval computes from our echo+logprobs answers must equal HF transformers' float32
log-softmax over the same tokens; its generations HF's greedy text."""

from __future__ import annotations

import json

import pytest
import torch

from support.clients import require_client
from support.oracle import hf_token_logprobs

MC_DOCS = [
    {"question": "The quick brown fox jumps over the lazy", "choices": ["dog", "river", "bread"], "answer": 0},
    {"question": "A small boat drifted slowly down the", "choices": ["hills", "river", "town"], "answer": 1},
    {"question": "The little cat slept on the warm", "choices": ["window", "sea", "snow"], "answer": 0},
]
GEN_DOCS = [{"question": "The old man told stories about the", "answer": "sea"},
            {"question": "Every morning the baker opens his", "answer": "shop"}]
GEN_TOKENS = 6
# each task's own lines (Jinja fields over the docs); task_yaml adds the dataset lines both share
MC_TASK = ("multiple_choice", 'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\n'
           'doc_to_target: "{{answer}}"\nmetric_list: [{metric: acc}]\n')
GEN_TASK = ("generate_until", 'doc_to_text: "{{question}}"\ndoc_to_target: "{{answer}}"\n'
            f'generation_kwargs: {{until: ["."], max_gen_toks: {GEN_TOKENS}}}\nmetric_list: [{{metric: exact_match}}]\n')


def task_yaml(name: str, task: tuple[str, str], data, cache) -> str:
    """A task over a local JSON-lines file (``datasets``' json loader, its cache in the test's folder)."""
    output_type, own_lines = task
    return (f"task: {name}\ndataset_path: json\n"
            f"dataset_kwargs: {{data_files: {{test: {data}}}, cache_dir: {cache}}}\n"
            f"test_split: test\noutput_type: {output_type}\n{own_lines}")


@pytest.fixture(scope="module")
def lm_eval():
    return require_client("lm_eval", "lm-eval")


@pytest.fixture(scope="module")
def task_manager(lm_eval, tmp_path_factory):
    """The two tasks in their own folder; lm-eval's thousands of built-in tasks are not indexed."""
    from lm_eval.tasks import TaskManager

    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    cache = folder / "datasets_cache"
    for name, task, docs in (("tiny_mc", MC_TASK, MC_DOCS), ("tiny_gen", GEN_TASK, GEN_DOCS)):
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
        (folder / f"{name}.yaml").write_text(task_yaml(name, task, data, cache))
    return TaskManager(include_path=str(folder), include_defaults=False)


def evaluate(lm_eval, task_manager, url: str, tasks: list[str], **model_args) -> dict:
    args = {"model": "demo", "base_url": f"{url}/v1/completions", "batch_size": 4, **model_args}
    return lm_eval.simple_evaluate(model="local-completions", model_args=args, tasks=tasks,
                                   task_manager=task_manager, log_samples=True)


def hf_loglikelihood(hf, context: str, continuation: str) -> tuple[float, bool]:
    """HF's log-probability of ``continuation`` after ``context`` (tokenized whole, then split where the
    context's own tokens end, without special tokens as lm-eval sends them), and whether it is greedy."""
    context_ids = hf.tokenizer(context, add_special_tokens=False)["input_ids"]
    whole = hf.tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    assert whole[:len(context_ids)] == context_ids, "fixture problem: the context's tokens change when continued"
    chosen, top, _ = hf_token_logprobs(hf.model, context_ids, whole[len(context_ids):], 1)
    return chosen.sum().item(), bool((chosen >= top[:, 0]).all())


def check_multiple_choice(hf, results: dict) -> None:
    samples = sorted(results["samples"]["tiny_mc"], key=lambda s: s["doc_id"])
    assert len(samples) == len(MC_DOCS)
    right = 0
    for sample in samples:
        expected = [hf_loglikelihood(hf, context, continuation) for context, continuation in sample["arguments"]]
        got = [resp[0] for resp in sample["resps"]]
        torch.testing.assert_close(torch.tensor([g[0] for g in got], dtype=torch.float64),
                                   torch.tensor([e[0] for e in expected], dtype=torch.float64), atol=1e-4, rtol=0)
        assert [g[1] for g in got] == [e[1] for e in expected]  # is_greedy, from our top logprobs
        scores = [e[0] for e in expected]
        right += scores.index(max(scores)) == sample["doc"]["answer"]
    assert results["results"]["tiny_mc"]["acc,none"] == pytest.approx(right / len(MC_DOCS))


def check_generations(hf, results: dict, with_bos: bool) -> None:
    """lm-eval's texts equal HF's greedy continuation of the context, cut at the task's stop string."""
    samples = sorted(results["samples"]["tiny_gen"], key=lambda s: s["doc_id"])
    assert len(samples) == len(GEN_DOCS)
    for sample in samples:
        context = sample["arguments"][0][0]
        ids = hf.tokenizer(context, add_special_tokens=with_bos)["input_ids"]
        expected = hf.greedy_ids(tuple(ids), GEN_TOKENS)
        assert sample["resps"][0][0] == expected.text.split(".")[0]


def test_default_settings_score_multiple_choice_and_generate_as_hf(api, lm_eval, task_manager):
    """Defaults: tokenizer_backend auto, which finds our /tokenizer_info and /tokenize (no tokenizer needed)."""
    _, hf, url = api
    results = evaluate(lm_eval, task_manager, url, ["tiny_mc", "tiny_gen"])
    assert results["config"]["model_args"]["batch_size"] == 4
    check_multiple_choice(hf, results)
    check_generations(hf, results, with_bos=False)


def test_a_local_huggingface_tokenizer_scores_as_hf(api, lm_eval, task_manager, chat_checkpoint):
    """tokenizer_backend=huggingface with the checkpoint's own folder: offline, the same token-id prompts."""
    _, hf, url = api
    results = evaluate(lm_eval, task_manager, url, ["tiny_mc", "tiny_gen"], tokenizer_backend="huggingface",
                       tokenizer=str(chat_checkpoint))
    check_multiple_choice(hf, results)
    check_generations(hf, results, with_bos=False)


def test_no_tokenizer_sends_text_prompts(api, lm_eval, task_manager):
    """tokenizer_backend=None: text prompts (our tokenizer adds BOS, as vLLM's). lm-eval itself needs a
    tokenizer for loglikelihoods (it refuses them), so only the generate_until task runs."""
    _, hf, url = api
    results = evaluate(lm_eval, task_manager, url, ["tiny_gen"], tokenizer_backend=None)
    check_generations(hf, results, with_bos=True)
