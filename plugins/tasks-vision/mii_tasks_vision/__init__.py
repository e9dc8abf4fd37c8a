"""mii-tasks-vision: MII Legacy's image tasks (CLIP zero-shot classification, Stable Diffusion) as task models."""
