"""The LibriSpeech recipe end to end through its Makefile, training from WebDataset shards, on a tree in
LibriSpeech's published layout built from real AN4 audio (FLAC, <subset>/<speaker>/<chapter>/)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from asr.cli import main as asr_main
from asr.corpora.an4 import read_split
from asr.data import read_manifest

ROOT = Path(__file__).resolve().parents[1]
SUBSETS = {"train-clean-100": ("train", 0, 48), "dev-clean": ("test", 0, 8), "test-clean": ("test", 8, 16),
           "test-other": ("test", 16, 24)}


def librispeech_tree(root: Path, an4_dir: Path, subsets: dict = SUBSETS) -> dict[str, list]:
    """Real AN4 utterances as LibriSpeech subsets: FLAC files and one trans.txt per speaker's chapter."""
    made = {}
    for subset, (split, a, b) in subsets.items():
        utts = read_split(an4_dir, split)[a:b]
        chapters: dict[Path, list[str]] = {}
        speakers = {s: 100 + k for k, s in enumerate(sorted({u.speaker for u in utts}))}
        for n, u in enumerate(utts):
            spk = speakers[u.speaker]
            chapter = root / "LibriSpeech" / subset / str(spk) / str(spk * 10)
            chapter.mkdir(parents=True, exist_ok=True)
            uid = f"{spk}-{spk * 10}-{n:04d}"
            sf.write(chapter / f"{uid}.flac", u.samples().numpy(), 16000, subtype="PCM_16")
            chapters.setdefault(chapter, []).append(f"{uid} {u.text}")
        for chapter, lines in chapters.items():
            (chapter / f"{chapter.parent.name}-{chapter.name}.trans.txt").write_text("\n".join(lines) + "\n")
        made[subset] = utts
    return made


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory, an4_dir):
    tmp = tmp_path_factory.mktemp("librispeech")
    made = librispeech_tree(tmp / "corpus", an4_dir)
    data = tmp / "data"
    run = subprocess.run(["make", "-C", str(ROOT / "recipes" / "librispeech"), "all",
                          f"LIBRISPEECH_DIR={tmp / 'corpus' / 'LibriSpeech'}", f"DATA={data}", "CONFIG=conf/smoke.yaml",
                          "SHARD_MB=0.1", f"RESULTS={tmp / 'RESULTS.md'}", f"ASR={sys.executable} -m asr"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return data, made, run.stdout, tmp


def test_every_stage_runs_and_both_test_sets_are_scored(recipe_run):
    data, made, out, tmp = recipe_run
    for n, name in enumerate(["prepare", "shard", "stats", "train", "lm", "tune", "decode", "score", "report"], 1):
        assert f"stage {n} {name}" in out, name
    for test in ("test-clean", "test-other"):
        words = sum(len(u.text.split()) for u in made[test])
        assert f"stage 8 score: {test} WER" in out
        scored = re.findall(rf"^%WER \d+\.\d\d \[ \d+ / {words},", out.split(f"stage 8 score: {test}")[1], re.M)
        assert len(scored) >= 2                                  # greedy, then with the LM
    results = (tmp / "RESULTS.md").read_text()
    assert "test-clean" in results and "test-other" in results


def test_prepare_joins_train_subsets_and_selects_on_dev_clean(recipe_run):
    data, made, out, _ = recipe_run
    assert [u.text for u in read_manifest(data / "train.jsonl")] == [u.text for u in made["train-clean-100"]]
    assert read_manifest(data / "dev.jsonl") == read_manifest(data / "dev-clean.jsonl")
    assert len(read_manifest(data / "test-other.jsonl")) == len(made["test-other"])


def test_training_streamed_the_shards(recipe_run):
    data, made, out, _ = recipe_run
    index = json.loads((data / "shards" / "index.json").read_text())
    assert len(index["shards"]) >= 3 and (data / "shards" / "shard-000000.tar").exists()
    config = json.loads((data / "exp" / "smoke" / "config.json").read_text())
    assert config["train_shards"] == f"{data}/shards/index.json"
    assert f"{len(made['train-clean-100'])} train / {len(made['dev-clean'])} dev utterances" in out
    log = [json.loads(line) for line in (data / "exp" / "smoke" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 2
    assert log[0]["audio_seconds"] == pytest.approx(sum(u.duration for u in made["train-clean-100"]), abs=1e-3)


def test_lm_stage_takes_a_published_arpa_or_lm_text(recipe_run, tmp_path):
    """LM_ARPA: the ARPA as given and the lexicon of its words; LM_TEXT: its lines join the transcripts."""
    data, _, _, _ = recipe_run
    arpa = data / "lm" / "lm.arpa"
    asr_main(["lm", "--arpa", str(arpa), "--out", str(tmp_path / "given")])
    assert (tmp_path / "given" / "lm.arpa").read_text() == arpa.read_text()
    assert (tmp_path / "given" / "lexicon.txt").read_text() == (data / "lm" / "lexicon.txt").read_text()
    import gzip

    with gzip.open(tmp_path / "lm-norm.txt.gz", "wt") as f:
        f.write("A ZEBRA QUIETLY CROSSED\n")
    asr_main(["lm", "--manifest", str(data / "train.jsonl"), "--text", str(tmp_path / "lm-norm.txt.gz"),
              "--out", str(tmp_path / "text")])
    assert "ZEBRA" in (tmp_path / "text" / "lexicon.txt").read_text()
    assert "ZEBRA" not in (data / "lm" / "lexicon.txt").read_text()


@pytest.mark.parametrize("subsets, test_sets", [
    ({"train-clean-5": ("train", 0, 96)}, ["test"]),                        # mini LibriSpeech: no dev, no test
    ({k: v for k, v in SUBSETS.items() if k != "test-other"}, ["test-clean"]),   # no test-other
])
def test_a_folder_with_only_some_subsets_runs_to_the_end(tmp_path, an4_dir, subsets, test_sets):
    """Recipes score the test sets there are; without a dev or a test subset, whole speakers of the training
    ones are held out for them."""
    made = librispeech_tree(tmp_path / "corpus", an4_dir, subsets)
    data = tmp_path / "data"
    run = subprocess.run(["make", "-C", str(ROOT / "recipes" / "librispeech"), "all",
                          f"LIBRISPEECH_DIR={tmp_path / 'corpus' / 'LibriSpeech'}", f"DATA={data}",
                          "CONFIG=conf/smoke.yaml", "SHARD_MB=0.1", f"RESULTS={tmp_path / 'RESULTS.md'}",
                          f"ASR={sys.executable} -m asr"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    scored = re.findall(r"^stage 8 score: (\S+) WER", run.stdout, re.M)
    assert scored == test_sets and "stage 9 report" in run.stdout
    train, dev = read_manifest(data / "train.jsonl"), read_manifest(data / "dev.jsonl")
    if "train-clean-5" in subsets:
        test = read_manifest(data / "test.jsonl")
        assert len(train) + len(dev) + len(test) == len(made["train-clean-5"])
        speakers = [{u.speaker for u in us} for us in (train, dev, test)]
        assert all(speakers) and not (speakers[0] & speakers[1] or speakers[0] & speakers[2])   # whole speakers
    else:
        assert len(dev) == len(made["dev-clean"]) and not (data / "test-other.jsonl").exists()
