"""The hook: each task and the model types it serves. Names only: nothing here imports torch.

A diffusers folder has no config.json; ``mii_core.legacy`` takes its model type from model_index.json's
``_class_name`` (the diffusers pipeline class it was saved from), so those class names are the model types
served here. An inpainting pipeline also runs a plain Stable Diffusion checkpoint (its 4-channel UNet)."""
from mii_core import hookimpl

SD = "StableDiffusionPipeline"
SD_INPAINT = "StableDiffusionInpaintPipeline"
TASKS = {
    "zero-shot-image-classification": ("mii_tasks_vision.zero_shot:ZeroShotImageClassification", ("clip",)),
    "text-to-image": ("mii_tasks_vision.diffusion:TextToImage", (SD,)),
    "text-to-image-inpainting": ("mii_tasks_vision.diffusion:Inpainting", (SD_INPAINT, SD)),
}


@hookimpl
def mii_core_register_tasks(registry):
    for task, (target, model_types) in TASKS.items():
        registry.register(task, target, model_types=model_types)
