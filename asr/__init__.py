"""asr: recurrent CTC speech recognition.

    import asr
    model = asr.load_model("data/an4/exp/cpu/best.pt")
    print(model.transcribe("utterance.wav").text)
    print(asr.wer(["HELLO WORLD"], ["HELLO WORD"]))   # 50.0
"""
from .score import score
from .transcribe import Transcriber, Transcript, load_model

__version__ = "0.1.0"


def wer(refs: list[str], hyps: list[str]) -> float:
    """Word error rate in percent of `hyps` against `refs`."""
    return score(refs, hyps).wer.rate


__all__ = ["load_model", "Transcriber", "Transcript", "score", "wer", "__version__"]
