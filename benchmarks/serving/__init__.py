"""W5 (serving under load, DeepSpeed-FastGen's method) and W1 through the servers: bench_serving.py's parts."""
