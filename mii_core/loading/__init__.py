"""Finding a checkpoint (local folder, hub id, hub cache) and streaming its tensors into a model."""
