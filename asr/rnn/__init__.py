"""The recurrent stack on CPU: torch.nn's GRU, LSTM and RNN maths in fewer, larger operations (issue 36).

    stack.py     run (the stack, layer by layer, on an nn.GRU / LSTM / RNN's own weights), supports (where it
                 applies), the weights kept for inference and their products in bfloat16 (products_in), dropout;
                 the overview of the method
    layers.py    one layer, both directions, as an autograd.Function each (GRULayer, LSTMLayer, RNNLayer), the
                 backward pass written out, and the helpers they share

The time loops themselves are compiled from asr/rnn_loop.cpp (asr.native) where they can be built.
"""
from .stack import dropout, products, products_in, run, supports

__all__ = ["dropout", "products", "products_in", "run", "supports"]
