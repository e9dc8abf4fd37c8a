"""W5 (serving under load, DeepSpeed-FastGen's method) and W1 through the servers: bench_serving.py's parts.
(Not named `serving`: tests/serving would shadow it when pytest puts tests/ on the path.)"""
