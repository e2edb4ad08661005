import hashlib
import json
import tarfile

import pytest

from asr.corpora.an4 import dev_speakers, download_an4, locate_an4, prepare_an4, read_split, read_transcription
from asr.data import read_manifest


def test_prepare_writes_train_dev_test(tmp_path, an4_dir):
    paths = prepare_an4(an4_dir, tmp_path)
    splits = {name: read_manifest(p) for name, p in paths.items()}
    assert len(splits["train"]) + len(splits["dev"]) == 948 and len(splits["test"]) == 130
    assert 40 <= len(splits["dev"]) <= 120
    train_spk = {u.speaker for u in splits["train"]}
    dev_spk = {u.speaker for u in splits["dev"]}
    assert len(dev_spk) == 6 and not train_spk & dev_spk                 # whole speakers held out
    assert {s[0] for s in dev_spk} == {"f", "m"}
    first = json.loads(paths["test"].read_text().splitlines()[0])
    assert set(first) == {"id", "audio", "duration", "text", "speaker"}
    assert first["id"] == "an406-fcaw-b" and first["text"] == "RUBOUT G M E F THREE NINE"
    total_hours = sum(u.duration for u in splits["train"] + splits["dev"]) / 3600
    assert total_hours == pytest.approx(0.707, abs=0.005)              # MANIFEST.txt's figure
    dictionary = (tmp_path / "an4.dic").read_text().splitlines()       # the task vocabulary, for the LM stage
    assert len(dictionary) == 130 and "THIRTEEN TH ER T IY N" in [" ".join(x.split()) for x in dictionary]


def test_train_transcripts_lose_sentence_markers(an4_dir):
    texts = read_transcription(an4_dir / "etc" / "an4_train.transcription")
    assert texts["an251-fash-b"] == "YES"
    assert not any("<" in t for t in texts.values())


def test_dev_speakers_are_spread():
    assert dev_speakers(["a", "b", "c", "d", "e", "f"], 2) == ["b", "e"]


def test_max_utts_subset(tmp_path, an4_dir):
    paths = prepare_an4(an4_dir, tmp_path, max_utts=20)
    assert [len(read_manifest(paths[s])) for s in ("train", "dev", "test")] == [20, 5, 5]


def _an4_archive(tmp_path, an4_dir):
    """A small archive in the publisher's layout, built from real AN4 files."""
    archive = tmp_path / "src" / "an4_sphere.tar.gz"
    archive.parent.mkdir()
    train = read_split(an4_dir, "train")[:3]
    test = read_split(an4_dir, "test")[:2]
    with tarfile.open(archive, "w:gz") as tar:
        lines = "".join(f"<s> {u.text} </s> ({u.id})\n" for u in train)
        (tmp_path / "train.transcription").write_text(lines)
        tar.add(tmp_path / "train.transcription", "an4/etc/an4_train.transcription")
        (tmp_path / "test.transcription").write_text("".join(f"{u.text} ({u.id})\n" for u in test))
        tar.add(tmp_path / "test.transcription", "an4/etc/an4_test.transcription")
        for u, d in [(u, "an4_clstk") for u in train] + [(u, "an4test_clstk") for u in test]:
            tar.add(u.audio, f"an4/wav/{d}/{u.speaker}/{u.id}.sph")
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def test_download_verifies_and_extracts(tmp_path, an4_dir):
    archive, sha = _an4_archive(tmp_path, an4_dir)
    target = tmp_path / "data"
    corpus = download_an4(target, url=archive.as_uri(), sha256=sha)
    assert corpus == target / "an4" and (target / "an4_sphere.tar.gz").exists()
    paths = prepare_an4(corpus, tmp_path / "manifests", n_dev_speakers=1)
    assert sum(len(read_manifest(p)) for p in paths.values()) == 5
    assert download_an4(target, url="file:///nonexistent", sha256=sha) == corpus  # already there: no fetch


def test_download_checksum_mismatch_removes_archive(tmp_path, an4_dir):
    archive, _ = _an4_archive(tmp_path, an4_dir)
    target = tmp_path / "data"
    with pytest.raises(ValueError, match="checksum mismatch"):
        download_an4(target, url=archive.as_uri(), sha256="0" * 64)
    assert not (target / "an4_sphere.tar.gz").exists() and not (target / "an4").exists()


def test_missing_audio_is_named(tmp_path, an4_dir):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "an4_train.transcription").write_text("<s> YES </s> (an1-xyz-b)\n")
    with pytest.raises(Exception, match="an1-xyz-b.sph"):
        read_split(tmp_path, "train")


def test_locate_prefers_env_then_shared(tmp_path, monkeypatch, an4_dir):
    monkeypatch.setenv("AN4_DIR", str(tmp_path))
    assert locate_an4(tmp_path / "dl") == tmp_path
    monkeypatch.delenv("AN4_DIR")
    assert locate_an4(tmp_path / "dl").resolve() == an4_dir.resolve()   # ../shared beside the checkout
    assert not (tmp_path / "dl").exists()                                # found, so nothing downloaded
