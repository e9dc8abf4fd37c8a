"""The hook: each task and the HF model types it serves. Names only: nothing here imports torch."""
from mii_core import hookimpl

ENCODERS = ("bert", "roberta", "xlm-roberta", "distilbert")
TASKS = {
    "fill-mask": "mii_tasks_text.fill_mask:FillMask",
    "text-classification": "mii_tasks_text.classification:TextClassification",
    "token-classification": "mii_tasks_text.classification:TokenClassification",
    "question-answering": "mii_tasks_text.question_answering:QuestionAnswering",
    "feature-extraction": "mii_tasks_text.embeddings:SentenceEmbeddings",
}


@hookimpl
def mii_core_register_tasks(registry):
    for task, target in TASKS.items():
        registry.register(task, target, model_types=ENCODERS)
