"""FSDD, generic folders / CSVs and Kaldi data dirs, on real audio from ../shared/corpora."""
import json
import re
import shutil
import tarfile

import pytest

import asr
from asr.cli import main as asr_main
from asr.corpora.folder import read_csv, read_folder
from asr.corpora.fsdd import DIGITS, download_fsdd, prepare_fsdd
from asr.corpora.kaldi import export_kaldi, import_kaldi
from asr.data import read_manifest


def test_fsdd_official_split_with_dev_carved_from_train(fsdd_dir, tmp_path):
    paths = prepare_fsdd(fsdd_dir, tmp_path)
    splits = {name: read_manifest(p) for name, p in paths.items()}
    assert {n: len(u) for n, u in splits.items()} == {"train": 2400, "dev": 300, "test": 300}
    index = lambda u: int(u.id.rsplit("_", 1)[1])
    assert {index(u) for u in splits["test"]} == set(range(5))
    assert {index(u) for u in splits["dev"]} == set(range(5, 10))
    u = next(u for u in splits["test"] if u.id == "7_jackson_3")
    assert u.text == "SEVEN" and u.speaker == "jackson" and 0.1 < u.duration < 2.5
    assert {u.text for u in splits["train"]} == set(DIGITS)
    assert prepare_fsdd(fsdd_dir.parent, tmp_path / "again")["test"].read_text() == paths["test"].read_text()


def test_fsdd_download_extracts_a_release_archive(fsdd_dir, tmp_path):
    archive = tmp_path / "release.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("0_george_0.wav", "1_theo_7.wav"):
            tar.add(fsdd_dir / name, f"free-spoken-digit-dataset-1.0.10/recordings/{name}")
    recordings = download_fsdd(tmp_path / "dl", url=archive.as_uri())
    assert sorted(p.name for p in recordings.glob("*.wav")) == ["0_george_0.wav", "1_theo_7.wav"]
    assert download_fsdd(tmp_path / "dl", url="file:///nonexistent") == recordings  # already there: no fetch


def test_folder_of_audio_with_transcripts(an4_test_utts, tmp_path):
    for u in an4_test_utts[:3]:
        shutil.copy(u.audio, tmp_path / f"{u.id}.sph")
        (tmp_path / f"{u.id}.txt").write_text(u.text.lower() + ", ok!\n")
    utts = read_folder(tmp_path)
    assert [u.text for u in utts] == [u.text + " OK" for u in sorted(an4_test_utts[:3], key=lambda u: u.id)]
    (tmp_path / "orphan.wav").write_bytes((tmp_path / f"{an4_test_utts[0].id}.sph").read_bytes())
    with pytest.raises(ValueError, match="1 audio file.* without a transcript, e.g. .*orphan.wav"):
        read_folder(tmp_path)


def test_recipe_text_config_normalises_targets_and_scoring_alike(an4_test_utts, tmp_path, capsys):
    """One `text` section (lower case, digits kept) drives prepare, training's check and scoring."""
    from asr.train import TrainConfig, read_targets
    corpus = tmp_path / "mine"
    corpus.mkdir()
    for i, u in enumerate(an4_test_utts[:2]):
        shutil.copy(u.audio, corpus / f"u{i}.sph")
        (corpus / f"u{i}.txt").write_text(f"Room {i + 7}, please!\n")
    conf = tmp_path / "lower.yaml"
    conf.write_text("text:\n  case: lower\n  numbers: keep\n")
    asr_main(["prepare", "folder", "--corpus", str(corpus), "--out", str(tmp_path / "d"), "--config", str(conf)])
    manifest = tmp_path / "d" / "all.jsonl"
    assert [u.text for u in read_manifest(manifest)] == ["room 7 please", "room 8 please"]
    assert '"case": "lower"' in (tmp_path / "d" / "text.json").read_text()
    with pytest.raises(ValueError, match="prepared with TextConfig.*case='lower'.*run the prepare stage again"):
        read_targets(TrainConfig(), str(manifest))                 # the default config spells numbers, upper case
    (tmp_path / "hyp.txt").write_text("u0\tROOM 7 PLEASE\nu1\tRoom 8 please\n")
    asr_main(["score", "--config", str(conf), "--manifest", str(manifest), "--hyp", str(tmp_path / "hyp.txt")])
    assert "%WER 0.00 [ 0 / 6" in capsys.readouterr().out       # hypotheses normalised as the references were
    asr_main(["prepare", "folder", "--corpus", str(corpus), "--out", str(tmp_path / "up")])
    assert [u.text for u in read_manifest(tmp_path / "up" / "all.jsonl")] == ["ROOM SEVEN PLEASE", "ROOM EIGHT PLEASE"]


def test_csv_and_tsv_lists(an4_test_utts, tmp_path):
    rows = [(u.audio, u.text) for u in an4_test_utts[:4]]
    (tmp_path / "list.csv").write_text("path,text\n" + "".join(f"{p},{t}\n" for p, t in rows))
    (tmp_path / "list.tsv").write_text("path\ttext\n" + "".join(f"{p}\t{t}\n" for p, t in rows))
    for name in ("list.csv", "list.tsv"):
        utts = read_csv(tmp_path / name)
        assert [(u.audio, u.text) for u in utts] == rows and utts[0].duration == an4_test_utts[0].duration
    (tmp_path / "bad.csv").write_text("file,words\nx.wav,hi\n")
    with pytest.raises(ValueError, match="bad.csv: needs a header with 'path' and 'text'"):
        read_csv(tmp_path / "bad.csv")
    (tmp_path / "missing.csv").write_text(f"path,text\nnope.wav,hi\n{rows[0][0]},{rows[0][1]}\n")
    asr_main(["prepare", "csv", "--corpus", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "m")])
    assert [u.audio for u in read_manifest(tmp_path / "m" / "all.jsonl")] == [rows[0][0]]   # the rest is kept
    rejected = [json.loads(line) for line in (tmp_path / "m" / "rejected.jsonl").read_text().splitlines()]
    assert rejected == [{"id": "nope", "audio": str(tmp_path / "nope.wav"), "reasons": ["missing file"],
                         "split": "all"}]


def test_kaldi_export_then_import_round_trips(an4_test_utts, tmp_path, capsys):
    utts = an4_test_utts[:20]
    files = export_kaldi(utts, tmp_path / "kaldi")
    back = import_kaldi(tmp_path / "kaldi")
    assert back == sorted(utts, key=lambda u: u.id)
    export_kaldi(back, tmp_path / "again")
    for name, path in files.items():                                    # export(import(x)) reproduces x
        assert (tmp_path / "again" / name).read_text() == path.read_text(), name
    spk2utt = (tmp_path / "kaldi" / "spk2utt").read_text().splitlines()
    assert sum(len(line.split()) - 1 for line in spk2utt) == 20
    asr_main(["prepare", "kaldi", "--corpus", str(tmp_path / "kaldi"), "--out", str(tmp_path / "m")])
    assert read_manifest(tmp_path / "m" / "all.jsonl") == back
    asr_main(["kaldi-export", "--manifest", str(tmp_path / "m" / "all.jsonl"), "--out", str(tmp_path / "k2")])
    assert (tmp_path / "k2" / "text").read_text() == files["text"].read_text()


def test_kaldi_pipes_and_bad_segments_are_refused_by_name(an4_test_utts, tmp_path):
    export_kaldi(an4_test_utts[:2], tmp_path)
    uid = sorted(u.id for u in an4_test_utts[:2])[0]
    (tmp_path / "segments").write_text(f"{uid} rec 0.0 1.0\n")
    with pytest.raises(ValueError, match="segments: .*recording rec has no entry in wav.scp"):
        import_kaldi(tmp_path)
    (tmp_path / "segments").write_text(f"{uid} {uid} 1.5 1.0\n")
    with pytest.raises(ValueError, match="segments:1: .*start 1.5 must be >= 0 and before end 1.0"):
        import_kaldi(tmp_path)
    (tmp_path / "segments").write_text(f"{uid} {uid} 0.0 99.0\n")
    with pytest.raises(ValueError, match="ends at 99.00 s, after its recording"):
        import_kaldi(tmp_path)
    (tmp_path / "segments").unlink()
    (tmp_path / "wav.scp").write_text(f"{uid} my-decoder --in x.sph |\n")
    with pytest.raises(ValueError, match="command pipe"):
        import_kaldi(tmp_path)


def test_kaldi_segments_cut_utterances_from_one_recording(an4_model, an4_test_utts, tmp_path):
    """Six AN4 test utterances joined (with 0.5 s silences) into one WAV, listed by a Kaldi `segments`
    file: imported, each span holds its utterance's samples, decodes as the separate file does, and
    exports back to the same files."""
    import soundfile as sf
    import torch

    from asr.data import AudioDataset
    from asr.tokens import Vocabulary
    utts = an4_test_utts[:6]
    pieces, lines, t = [], [], 0.0
    for u in utts:
        wave = u.samples()
        pieces += [wave, torch.zeros(8000)]
        lines.append(f"{u.id} session {t:.2f} {t + wave.shape[0] / 16000:.2f}")
        t += wave.shape[0] / 16000 + 0.5
    sf.write(tmp_path / "session.wav", torch.cat(pieces).numpy(), 16000, subtype="PCM_16")
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text(f"session {tmp_path / 'session.wav'}\n")
    (kaldi / "segments").write_text("".join(sorted(line + "\n" for line in lines)))
    (kaldi / "text").write_text("".join(sorted(f"{u.id} {u.text}\n" for u in utts)))
    (kaldi / "utt2spk").write_text("".join(sorted(f"{u.id} {u.speaker}\n" for u in utts)))
    (kaldi / "spk2utt").write_text("".join(f"{s} {' '.join(sorted(u.id for u in utts if u.speaker == s))}\n"
                                           for s in sorted({u.speaker for u in utts})))

    asr_main(["prepare", "kaldi", "--corpus", str(kaldi), "--out", str(tmp_path / "m")])
    segs = {u.id: u for u in read_manifest(tmp_path / "m" / "all.jsonl")}
    assert len(segs) == 6 and all(s.audio == str(tmp_path / "session.wav") and s.start is not None
                                  for s in segs.values())
    for u in utts:                                        # the span is the utterance, to the 10 ms of the times
        seg, whole = segs[u.id].samples(), u.samples()
        assert abs(seg.shape[0] - whole.shape[0]) <= 160 and segs[u.id].text == u.text
        n = min(seg.shape[0], whole.shape[0]) - 160
        assert torch.allclose(seg[:n], whole[:n], atol=1 / 32768)
    audio, targets, _ = AudioDataset(list(segs.values()), Vocabulary())[0]   # training reads the span too
    assert audio.shape[0] == pytest.approx(list(segs.values())[0].duration * 16000, abs=2)

    asr_main(["decode", "--model", str(an4_model), "--manifest", str(tmp_path / "m" / "all.jsonl"),
              "--out", str(tmp_path / "dec")])
    hyps = dict(line.split("\t") for line in (tmp_path / "dec" / "hyp.txt").read_text().splitlines())
    separate = asr.load_model(an4_model).transcribe([u.audio for u in utts])
    assert [hyps[u.id] for u in utts] == [r.text for r in separate]

    files = export_kaldi(list(segs.values()), tmp_path / "back")
    for name in ("wav.scp", "segments", "text", "utt2spk", "spk2utt"):
        assert files[name].read_text() == (kaldi / name).read_text(), name


def test_locate_fsdd_prefers_the_environment_then_shared(fsdd_dir, tmp_path, monkeypatch):
    from asr.corpora.fsdd import locate_fsdd
    monkeypatch.delenv("FSDD_DIR", raising=False)
    assert locate_fsdd(tmp_path) == fsdd_dir.parent                     # ../shared/corpora/fsdd
    monkeypatch.setenv("FSDD_DIR", str(tmp_path))
    assert locate_fsdd(tmp_path / "dl") == tmp_path


def test_vctk_p239_split_by_utterance_with_normalised_text(tmp_path):
    from asr.corpora.vctk import locate_vctk, prepare_vctk
    corpus = locate_vctk(tmp_path / "dl")
    assert corpus.name == "VCTK-Corpus"
    splits = {n: read_manifest(p) for n, p in prepare_vctk(corpus, tmp_path).items()}
    assert {n: len(u) for n, u in splits.items()} == {"train": 401, "dev": 51, "test": 51}  # 503: k % 10 == 0, 1
    first = splits["test"][0]
    assert first.id == "p239_001" and first.text == "PLEASE CALL STELLA" and first.audio.endswith(".flac")
    assert first.speaker == "p239" and 1.0 < first.duration < 10
    assert not {u.id for u in splits["test"]} & {u.id for u in splits["train"]}


def test_vctk_download_extracts_a_zip_of_the_published_layout(tmp_path):
    import zipfile

    from asr.corpora.vctk import download_vctk, locate_vctk, read_vctk
    src = locate_vctk(tmp_path)
    archive = tmp_path / "vctk.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for stem in ("p239_001", "p239_002"):
            z.write(src / "txt" / "p239" / f"{stem}.txt", f"VCTK-Corpus/txt/p239/{stem}.txt")
            z.write(src / "flac16k" / "p239" / f"{stem}.flac", f"VCTK-Corpus/flac16k/p239/{stem}.flac")
    corpus = download_vctk(tmp_path / "dl", url=archive.as_uri())
    assert [u.id for u in read_vctk(corpus)] == ["p239_001", "p239_002"]
    (corpus / "flac16k" / "p239" / "p239_002.flac").unlink()
    with pytest.raises(FileNotFoundError, match="p239_002.txt: no audio for it"):
        read_vctk(corpus)


def test_librispeech_layout_built_from_real_audio(an4_test_utts, tmp_path, capsys):
    """Real AN4 audio arranged as LibriSpeech publishes it: <subset>/<speaker>/<chapter>/*.flac + trans.txt."""
    import soundfile as sf

    from asr.audio import load_audio
    from asr.corpora.librispeech import read_librispeech
    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123"
    chapter.mkdir(parents=True)
    lines = []
    for n, u in enumerate(an4_test_utts[:3]):
        uid = f"84-121123-{n:04d}"
        sf.write(chapter / f"{uid}.flac", load_audio(u.audio).numpy(), 16000)
        lines.append(f"{uid} {u.text}")
    (chapter / "84-121123.trans.txt").write_text("\n".join(lines) + "\n")
    utts = read_librispeech(tmp_path / "LibriSpeech" / "dev-clean")
    assert [u.text for u in utts] == [u.text for u in an4_test_utts[:3]] and {u.speaker for u in utts} == {"84"}
    assert utts[0].duration == pytest.approx(an4_test_utts[0].duration, abs=1e-3)
    asr_main(["prepare", "librispeech", "--corpus", str(tmp_path / "LibriSpeech"), "--out", str(tmp_path / "m")])
    assert read_manifest(tmp_path / "m" / "dev-clean.jsonl") == utts
    (chapter / "84-121123-0001.flac").unlink()
    asr_main(["prepare", "librispeech", "--corpus", str(tmp_path / "LibriSpeech"), "--out", str(tmp_path / "m2")])
    kept = [u.id for u in read_manifest(tmp_path / "m2" / "dev-clean.jsonl")]
    assert kept == [u.id for u in utts if u.id != "84-121123-0001"]
    assert '"84-121123-0001"' in (tmp_path / "m2" / "rejected.jsonl").read_text()


def test_ljspeech_layout_uses_the_normalised_column(an4_test_utts, tmp_path):
    from asr.corpora.librispeech import read_ljspeech
    (tmp_path / "wavs").mkdir()
    # SPHERE bytes under a .wav name: soundfile reads by content
    shutil.copy(an4_test_utts[0].audio, tmp_path / "wavs" / "LJ001-0001.wav")
    (tmp_path / "metadata.csv").write_text("LJ001-0001|Printing, in 1912.|Printing, in nineteen twelve.\n")
    (u,) = read_ljspeech(tmp_path)
    assert u.text == "PRINTING IN NINETEEN TWELVE" and u.duration == an4_test_utts[0].duration
    (tmp_path / "metadata.csv").write_text("LJ001-0001|only two\n")
    with pytest.raises(ValueError, match=re.escape("metadata.csv:1: expected id|text|normalized text")):
        read_ljspeech(tmp_path)


def test_librispeech_and_ljspeech_downloads_extract_the_published_archives(an4_test_utts, tmp_path):
    """Archives in the published layouts, built from real audio and served from a file:// URL."""
    import soundfile as sf

    from asr.corpora.librispeech import download_librispeech, download_ljspeech, prepare_librispeech, prepare_ljspeech
    src = tmp_path / "src"
    chapter = src / "LibriSpeech" / "test-clean" / "84" / "121123"
    chapter.mkdir(parents=True)
    for n, u in enumerate(an4_test_utts[:2]):
        sf.write(chapter / f"84-121123-{n:04d}.flac", u.samples().numpy(), 16000)
    (chapter / "84-121123.trans.txt").write_text("".join(f"84-121123-{n:04d} {u.text}\n"
                                                         for n, u in enumerate(an4_test_utts[:2])))
    lj = src / "LJSpeech-1.1"
    (lj / "wavs").mkdir(parents=True)
    sf.write(lj / "wavs" / "LJ001-0001.wav", an4_test_utts[2].samples().numpy(), 16000)
    (lj / "metadata.csv").write_text("LJ001-0001|In 1912.|In nineteen twelve.\n")
    with tarfile.open(tmp_path / "test-clean.tar.gz", "w:gz") as tar:
        tar.add(src / "LibriSpeech", "LibriSpeech")
    with tarfile.open(tmp_path / "lj.tar.bz2", "w:bz2") as tar:
        tar.add(lj, "LJSpeech-1.1")

    corpus = download_librispeech(tmp_path / "dl", "test-clean", url=(tmp_path / "test-clean.tar.gz").as_uri())
    assert corpus == tmp_path / "dl" / "LibriSpeech"
    assert download_librispeech(tmp_path / "dl", "test-clean", url="file:///nonexistent") == corpus  # no refetch
    manifest = prepare_librispeech(corpus, tmp_path / "m")["test-clean"]
    assert [u.text for u in read_manifest(manifest)] == [u.text for u in an4_test_utts[:2]]

    lj_dir = download_ljspeech(tmp_path / "dl2", url=(tmp_path / "lj.tar.bz2").as_uri())
    assert lj_dir.name == "LJSpeech-1.1" and download_ljspeech(tmp_path / "dl2", url="file:///nonexistent") == lj_dir
    (u,) = read_manifest(prepare_ljspeech(lj_dir, tmp_path / "m2")["all"])
    assert u.text == "IN NINETEEN TWELVE" and u.duration == pytest.approx(an4_test_utts[2].duration, abs=1e-3)
