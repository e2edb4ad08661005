"""TorchScript export (fp32 and int8) of a real trained model: same outputs, same transcripts."""
import pytest
import torch

import asr
from asr.audio import load_audio
from asr.backends.torchscript import is_exported
from asr.cli import main as asr_main
from asr.score import score


@pytest.fixture(scope="module")
def exported(overfit_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    asr_main(["export", "--model", str(overfit_model[0]), "--out", str(out / "model.ts")])
    asr_main(["export", "--model", str(overfit_model[0]), "--out", str(out / "model_int8.ts"), "--int8"])
    return out / "model.ts", out / "model_int8.ts"


def test_torchscript_matches_eager_log_probs_and_transcripts(overfit_model, exported, an4_test_utts):
    eager, script = asr.load_model(overfit_model[0]), asr.load_model(exported[0])
    assert is_exported(exported[0]) and not is_exported(overfit_model[0])
    for u in an4_test_utts[:5]:
        wave = load_audio(u.audio)
        a, n = eager.log_probs([wave])
        b, m = script.log_probs([wave])
        assert torch.equal(n, m)
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    paths = [u.audio for u in an4_test_utts]
    assert [r.text for r in script.transcribe(paths)] == [r.text for r in eager.transcribe(paths)]


def test_int8_is_smaller_and_within_a_point_of_wer_on_an4_test(an4_model, an4_test_utts, tmp_path):
    asr_main(["export", "--model", str(an4_model), "--out", str(tmp_path / "model.ts")])
    asr_main(["export", "--model", str(an4_model), "--out", str(tmp_path / "int8.ts"), "--int8"])
    assert (tmp_path / "int8.ts").stat().st_size < 0.5 * (tmp_path / "model.ts").stat().st_size
    refs, paths = [u.text for u in an4_test_utts], [u.audio for u in an4_test_utts]
    eager = score(refs, [r.text for r in asr.load_model(an4_model).transcribe(paths)])
    quant = score(refs, [r.text for r in asr.load_model(tmp_path / "int8.ts").transcribe(paths)])
    assert eager.wer.rate < 20 and abs(quant.wer.rate - eager.wer.rate) <= 1.0, (eager.summary(), quant.summary())
