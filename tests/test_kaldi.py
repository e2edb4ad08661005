"""Kaldi data dirs judged by Kaldi's own rules: utils/validate_data_dir.sh --no-feats (tests/kaldi, copied
from Kaldi) on `asr kaldi-export` of every corpus here, WAV copies Kaldi's binaries read, and the round trip."""
import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
import torch

from asr.cli import main as asr_main
from asr.corpora.fsdd import read_fsdd
from asr.corpora.kaldi import export_kaldi, import_kaldi
from asr.corpora.vctk import read_vctk
from asr.data import Utterance, read_manifest, write_manifest

KALDI = Path(__file__).parent / "kaldi"
CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"


def validate(data_dir: Path) -> subprocess.CompletedProcess:
    """Kaldi's validate_data_dir.sh run as Kaldi recipes run it: from the dir holding utils/.

    Its check for non-printable characters in `text` runs grep in the first of C.UTF-8 and en_US.UTF-8 that
    `locale -a` lists. Debian lists its UTF-8 C locale as "C.utf8" and may have no en_US.UTF-8, and then the
    check runs byte-wise, where every byte of a non-ASCII letter is "non-printable". So `locale -a` here names
    C.UTF-8 (glibc takes either spelling), and the check sees UTF-8 as it does on a Kaldi machine."""
    import os
    import tempfile

    assert shutil.which("perl"), "Kaldi's validation scripts need perl"
    with tempfile.TemporaryDirectory() as shim:
        locale = Path(shim) / "locale"
        real = shutil.which("locale")
        locale.write_text(f'#!/bin/sh\n[ "$1" = -a ] && {{ echo C.UTF-8; exit 0; }}\nexec {real} "$@"\n')
        locale.chmod(0o755)
        env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}
        return subprocess.run(["bash", "utils/validate_data_dir.sh", "--no-feats", str(data_dir.resolve())],
                              cwd=KALDI, capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def corpora_utts(an4_test_utts):
    """Each corpus here as its prepare stage reads it: AN4 (SPHERE, speaker inside the id), FSDD (WAV, speaker
    inside the id, 8 kHz), VCTK p239 (FLAC, speaker-prefixed ids), Common Voice Persian (MP3, speakers apart from
    the ids, transcripts in Arabic script)."""
    from asr.corpora.commonvoice import locale_text, read_tsv

    fsdd = read_fsdd(CORPORA / "fsdd" / "recordings")
    persian = read_tsv(CORPORA / "commonvoice_fa" / "fa", "validated.tsv", locale_text("fa"))
    return {"an4": an4_test_utts[::4], "fsdd": fsdd[::100],
            "vctk": read_vctk(CORPORA / "vctk_p239" / "VCTK-Corpus")[::25], "commonvoice_fa": persian[::8]}


def test_an4_ids_as_they_are_break_kaldis_speaker_sort_rule(an4_test_utts, tmp_path):
    """The rule bites: AN4's own ids (an406-fcaw-b) in utt2spk are not sorted by speaker."""
    d = tmp_path / "bad"
    d.mkdir()
    utts = sorted(an4_test_utts[:30], key=lambda u: u.id)
    (d / "wav.scp").write_text("".join(f"{u.id} {u.audio}\n" for u in utts))
    (d / "text").write_text("".join(f"{u.id} {u.text}\n" for u in utts))
    (d / "utt2spk").write_text("".join(f"{u.id} {u.speaker}\n" for u in utts))
    speakers = sorted({u.speaker for u in utts})
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(u.id for u in utts if u.speaker == s)}\n" for s in speakers))
    run = validate(d)
    assert run.returncode != 0 and "not in sorted order when sorted first on speaker-id" in run.stdout + run.stderr


@pytest.mark.parametrize("corpus", ["an4", "fsdd", "vctk", "commonvoice_fa"])
def test_kaldi_export_of_every_corpus_passes_validate_data_dir_and_round_trips(corpora_utts, corpus, tmp_path):
    utts = corpora_utts[corpus]
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, utts)
    asr_main(["kaldi-export", "--manifest", str(manifest), "--out", str(tmp_path / "k")])
    run = validate(tmp_path / "k")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Successfully validated data-directory" in run.stdout
    wav_scp = (tmp_path / "k" / "wav.scp").read_text().splitlines()
    suffix = Path(utts[0].audio).suffix
    expected = {".sph": "sph2pipe -f wav -p -c 1 ", ".flac": "flac -c -d -s ", ".wav": "", ".mp3": "ffmpeg "}[suffix]
    assert all(line.split(" ", 1)[1].startswith(expected) for line in wav_scp)
    assert import_kaldi(tmp_path / "k") == sorted(utts, key=lambda u: u.id)            # the same manifest back
    asr_main(["kaldi-import", "--dir", str(tmp_path / "k"), "--out", str(tmp_path / "again.jsonl")])
    assert read_manifest(tmp_path / "again.jsonl") == sorted(utts, key=lambda u: u.id)
    # eleven Persian sentences are too few to learn an alphabet from at the default three occurrences a character
    persian = ["text.charset=data", "text.case=lower", "text.language=fa", "text.min_count=1"]
    small = persian if corpus == "commonvoice_fa" else []
    asr_main(["prepare", "kaldi", "--corpus", str(tmp_path / "k"), "--out", str(tmp_path / "back"), *small])
    assert [u.id for u in read_manifest(tmp_path / "back" / "all.jsonl")] == sorted(u.id for u in utts)


def test_wav_copies_hold_the_samples_and_segments_validate(an4_test_utts, tmp_path):
    utts = an4_test_utts[:6]
    export_kaldi(utts, tmp_path / "copy", audio="copy")
    assert validate(tmp_path / "copy").returncode == 0
    for line in (tmp_path / "copy" / "wav.scp").read_text().splitlines():
        kid, path = line.split(" ", 1)
        info = sf.info(path)
        assert (info.format, info.subtype, info.samplerate) == ("WAV", "PCM_16", 16000)   # what Kaldi reads
    back = {u.id: u for u in import_kaldi(tmp_path / "copy")}
    for u in utts:
        torch.testing.assert_close(back[u.id].samples(), u.samples(), atol=1 / 32768, rtol=0)
    # segments: the six utterances as spans of one recording
    session = tmp_path / "session.wav"
    pieces, spans, t = [], [], 0.0
    for u in utts:
        w = u.samples()
        pieces += [w, torch.zeros(8000)]
        spans.append((t, t + w.shape[0] / 16000))
        t += w.shape[0] / 16000 + 0.5
    sf.write(str(session), torch.cat(pieces).numpy(), 16000, subtype="PCM_16")
    segs = [Utterance(u.id, str(session), round(b - a, 3), u.text, u.speaker, round(a, 2), round(b, 2))
            for u, (a, b) in zip(utts, spans)]
    export_kaldi(segs, tmp_path / "seg")
    run = validate(tmp_path / "seg")
    assert run.returncode == 0, run.stdout + run.stderr
    assert [(u.id, u.start, u.end) for u in import_kaldi(tmp_path / "seg")] == \
           sorted((u.id, u.start, u.end) for u in segs)


def test_text_kaldi_reserves_is_refused_by_name(an4_test_utts, tmp_path):
    from dataclasses import replace

    with pytest.raises(ValueError, match=r"an\S+: cannot be a Kaldi utterance: <s> in its text"):
        export_kaldi([replace(an4_test_utts[0], text="<s> YES")], tmp_path)
