"""Engine: ragged batches, per-sequence KV state, the FastGen calls and the step loop."""
