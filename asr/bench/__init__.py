"""`asr bench ...`: every measurement, one module each, each printing numbers and ratios measured in one run.

    train.py    `asr bench train`: training throughput, the model alone against the whole pipeline from files
    plan.py     `asr bench plan`: PREDICTED hours per epoch and run on N GPUs, from those measured rows
    decode.py   `asr bench decode`: real-time factor of the checkpoint and every export, greedy and LM beam
    stream.py   `asr bench stream`: a streaming model's WER, word latency and RTF
    serve.py    `asr bench serve`: `asr serve` under concurrent clients, batched against one request at a time
    soak.py     `asr bench soak`: `asr serve` under sustained mixed traffic; statuses, latency and memory over time
    peer.py     `asr bench peer`: ours beside CMU pocketsphinx's English model on the same test sets
    rnn.py      the recurrent stack alone, asr.rnn against torch.nn, beside one large sgemm (train and decode)
"""
