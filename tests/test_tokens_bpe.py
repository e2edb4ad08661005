"""BPE pieces as CTC targets on real VCTK speech: tests/test_tokens.py's check, in a file of its own so that
pytest-xdist (--dist loadfile) can run it beside the character model's training instead of after it."""
import pytest
from test_tokens import check_tokens


@pytest.mark.slow
def test_bpe_model_trains_and_decodes_on_vctk(vctk_six):
    check_tokens(vctk_six, "bpe")
