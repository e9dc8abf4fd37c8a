"""Tiny random vision checkpoints built locally (nothing from a hub), as diffusers' own tests build them:
a CLIP (model, BPE tokenizer, image processor) and Stable Diffusion folders (UNet, VAE, CLIP text encoder,
DDIM scheduler) for text-to-image and inpainting, saved as diffusers pipelines (model_index.json)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image
from tokenizers.pre_tokenizers import ByteLevel

WORDS = ["cat", "dog", "car", "tree", "photo", "this", "is", "a", "of", "panda", "in", "space", "red", "house"]
TEXT_SIZES = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                  max_position_embeddings=77)


def clip_tokenizer() -> transformers.CLIPTokenizer:
    """CLIP's byte-level BPE: every byte alone and word-final ("</w>"), and merges spelling a few whole words."""
    symbols = sorted(ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    merges = []
    for word in WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:  # merge left to right: "c a t</w>" -> "ca t</w>" -> "cat</w>"
            merges.append((pieces[0], pieces[1]))
            vocab.setdefault(pieces[0] + pieces[1], len(vocab))
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=list(dict.fromkeys(merges)), model_max_length=77)


def randomise(model: torch.nn.Module, std: float = 0.5) -> None:
    """Random but not tiny weights, so outputs differ clearly between inputs."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, std)


def build_tiny_clip(folder: Path, seed: int = 0) -> Path:
    tokenizer = clip_tokenizer()
    text = transformers.CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                       **TEXT_SIZES)
    vision = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                           num_hidden_layers=2, image_size=32, patch_size=8)
    config = transformers.CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)
    torch.manual_seed(seed)
    model = transformers.CLIPModel(config)
    randomise(model, 0.2)
    processor = transformers.CLIPProcessor(
        image_processor=transformers.CLIPImageProcessor(size={"shortest_edge": 32},
                                                        crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer)
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def sd_components(unet_in_channels: int = 4, seed: int = 0) -> dict:
    """diffusers' test components (tests/pipelines/stable_diffusion): 32-pixel latents, two blocks each."""
    import diffusers

    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=16, in_channels=unet_in_channels,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, norm_num_groups=2)
    vae = diffusers.AutoencoderKL(
        block_out_channels=[4, 8], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4, norm_num_groups=2)
    tokenizer = clip_tokenizer()
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **TEXT_SIZES))
    scheduler = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def build_tiny_stable_diffusion(folder: Path, inpainting: bool = False) -> Path:
    """A text-to-image folder, or with ``inpainting`` one whose UNet takes latents + mask + masked image (9
    channels) saved as a StableDiffusionInpaintPipeline (as runwayml/stable-diffusion-inpainting is)."""
    import diffusers

    pipeline_class = diffusers.StableDiffusionInpaintPipeline if inpainting else diffusers.StableDiffusionPipeline
    pipe = pipeline_class(**sd_components(unet_in_channels=9 if inpainting else 4))
    pipe.save_pretrained(folder)
    return folder


def random_image(seed: int, size=(40, 48)) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(size[1], size[0], 3) * 255).astype("uint8"))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
