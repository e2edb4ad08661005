"""`asr bench ...`: training throughput (train.py), its cost model (plan.py) and serving under load (serve.py)."""
