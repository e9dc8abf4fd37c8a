"""The seed's example as a user writes it, run as `deepspeed --num_gpus 2 mii_example.py` or
`torchrun --nproc_per_node 2 mii_example.py`: every rank runs it, only rank 0 gets the responses
(the others print []). The model is a hub id in the seed; here a local folder from $MII_EXAMPLE_MODEL."""
import os

import mii_core

pipe = mii_core.pipeline(os.environ["MII_EXAMPLE_MODEL"])
response = pipe(["DeepSpeed is", "Seattle is"], max_new_tokens=128)
print(f"rank {os.environ.get('RANK', '0')}: {response}")
