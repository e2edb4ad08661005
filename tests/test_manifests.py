"""Manifests in the field's forms: NeMo's (read as they are, written back), lhotse's (CutSet, or recordings +
supervisions, built here by lhotse itself from real FSDD audio), normalised before validation and training."""
import json
import os
from pathlib import Path

import pytest
import soundfile as sf

from asr.cli import main as asr_main
from asr.config import TrainConfig, load_config
from asr.data import read_manifest
from asr.train import read_targets

CPU_YAML = Path(__file__).resolve().parents[1] / "recipes" / "an4" / "conf" / "cpu.yaml"
SPOKEN = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
          "8": "eight", "9": "nine"}


@pytest.fixture(scope="module")
def fsdd_files(fsdd_dir):
    """Twelve real FSDD recordings: (path, lowercase words, speaker)."""
    files = sorted(fsdd_dir.glob("*.wav"))[:: max(1, len(list(fsdd_dir.glob("*.wav"))) // 12)][:12]
    return [(p, SPOKEN[p.name.split("_")[0]], p.name.split("_")[1]) for p in files]


def _nemo_manifest(folder, fsdd_files):
    """A NeMo manifest as NeMo users write one: relative paths, lowercase text, NeMo's own extra keys."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (path, words, _) in enumerate(fsdd_files):
        entry = {"audio_filepath": os.path.relpath(path, folder), "duration": sf.info(path).duration,
                 "text": f"{words} {words}" if i % 2 else words, "lang": "en", "pnc": "no"}
        lines.append(json.dumps(entry))
    two = fsdd_files[0][0]                                  # the same file twice, as two segments of it
    lines += [json.dumps({"audio_filepath": str(two), "offset": 0.0, "duration": 0.2, "text": "zero"}),
              json.dumps({"audio_filepath": str(two), "offset": 0.05, "duration": 0.2, "text": "zero"})]
    (folder / "train_manifest.json").write_text("\n".join(lines) + "\n")
    return folder / "train_manifest.json"


def test_nemo_manifests_read_as_they_are_and_validate_and_train_normalised(fsdd_files, tmp_path, capsys):
    manifest = _nemo_manifest(tmp_path / "nemo", fsdd_files)
    utts = read_manifest(manifest)
    assert len(utts) == len(fsdd_files) + 2 and len({u.id for u in utts}) == len(utts)
    assert utts[0].audio == os.path.normpath(fsdd_files[0][0]) and utts[0].text == fsdd_files[0][1]   # as written
    assert utts[0].extra == {"lang": "en", "pnc": "no"}
    assert (utts[-1].start, utts[-1].end) == (0.05, pytest.approx(0.25))
    assert utts[-1].samples().shape[0] == 3200                                   # 0.2 s of the file at 16 kHz
    cfg = load_config(TrainConfig, CPU_YAML)
    assert [u.text for u in read_targets(cfg, str(manifest))][:2] == [fsdd_files[0][1].upper(),
                                                                      f"{fsdd_files[1][1]} {fsdd_files[1][1]}".upper()]
    asr_main(["validate", str(manifest), "--config", str(CPU_YAML)])              # lowercase is no longer refused
    out = capsys.readouterr().out
    assert f"{len(utts)} entries: {len(utts)} usable, 0 rejected" in out and "outside the vocabulary" not in out


def test_nemo_export_round_trips_and_prepare_nemo_normalises(fsdd_files, tmp_path):
    utts = read_manifest(_nemo_manifest(tmp_path / "nemo", fsdd_files))
    asr_main(["prepare", "nemo", "--corpus", str(tmp_path / "nemo" / "train_manifest.json"), "--out",
              str(tmp_path / "prepared")])
    prepared = read_manifest(tmp_path / "prepared" / "all.jsonl")
    assert [u.text for u in prepared] == [u.text.upper() for u in utts]
    asr_main(["nemo-export", "--manifest", str(tmp_path / "prepared" / "all.jsonl"), "--out", str(tmp_path / "n.json")])
    entries = [json.loads(line) for line in (tmp_path / "n.json").read_text().splitlines()]
    assert set(entries[0]) >= {"audio_filepath", "duration", "text"} and "audio" not in entries[0]
    assert entries[-1]["offset"] == 0.05
    back = read_manifest(tmp_path / "n.json")
    assert [(u.id, u.audio, u.duration, u.text, u.start, u.end) for u in back] == \
           [(u.id, u.audio, u.duration, u.text, u.start, u.end) for u in prepared]


def test_bad_nemo_lines_are_named(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"audio_filepath": "a.wav", "text": "yes"}) + "\n")
    with pytest.raises(ValueError, match=r"m.json:1: not a manifest entry: no duration"):
        read_manifest(bad)


def test_lhotse_cuts_and_recordings_with_supervisions_prepare_for_training(fsdd_files, tmp_path):
    lhotse = pytest.importorskip("lhotse")
    recordings = lhotse.RecordingSet.from_recordings(lhotse.Recording.from_file(p) for p, _, _ in fsdd_files)
    supervisions = lhotse.SupervisionSet.from_segments(
        lhotse.SupervisionSegment(id=f"{r.id}-sup", recording_id=r.id, start=0.0, duration=r.duration, text=words,
                                  speaker=speaker)
        for r, (_, words, speaker) in zip(recordings, fsdd_files))
    recipe = tmp_path / "lhotse"                          # the layout lhotse's corpus recipes write
    recipe.mkdir()
    recordings.to_file(recipe / "fsdd_recordings_train.jsonl.gz")
    supervisions.to_file(recipe / "fsdd_supervisions_train.jsonl.gz")
    cuts = lhotse.CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
    cuts.subset(first=4).to_file(recipe / "fsdd_cuts_dev.jsonl.gz")
    asr_main(["prepare", "lhotse", "--corpus", str(recipe), "--out", str(tmp_path / "out")])
    train = read_manifest(tmp_path / "out" / "train.jsonl")
    dev = read_manifest(tmp_path / "out" / "dev.jsonl")
    assert [u.id for u in train] == [f"{r.id}-sup" for r in recordings] and len(dev) == 4
    assert [u.text for u in train] == [w.upper() for _, w, _ in fsdd_files]
    assert train[0].speaker == fsdd_files[0][2] and train[0].start is None          # the whole file
    assert train[0].samples().shape[0] == recordings[0].num_samples * 16000 // recordings[0].sampling_rate
    # a segment of a recording keeps its span
    part = lhotse.CutSet.from_manifests(recordings=recordings.subset(first=1), supervisions=lhotse.SupervisionSet([
        lhotse.SupervisionSegment(id="seg", recording_id=recordings[0].id, start=0.05, duration=0.2, text="oh")]))
    part.to_file(tmp_path / "part.jsonl.gz")
    asr_main(["prepare", "lhotse", "--corpus", str(tmp_path / "part.jsonl.gz"), "--out", str(tmp_path / "p")])
    (seg,) = read_manifest(tmp_path / "p" / "all.jsonl")
    assert (seg.start, seg.end, seg.text) == (0.05, 0.25, "OH")
