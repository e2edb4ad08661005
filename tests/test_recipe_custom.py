"""`make recipe RECIPE=custom SOURCE=...`: all eight stages on one's own data (real FSDD recordings laid out
as a user's folder), dev and test held out by speaker, a config sized to the data; every source form detected."""
import json
import re
import subprocess
import unicodedata
from pathlib import Path

import pytest

from asr.cli import main as asr_main
from asr.config import TrainConfig, load_config
from asr.corpora.base import hold_out
from asr.corpora.custom import scaled_config, source_kind
from asr.corpora.kaldi import export_kaldi
from asr.data import read_manifest

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT.parent / "shared" / "corpora"
DIGITS = "zero one two three four five six seven eight nine".split()


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    """speaker/<file>.wav + .txt, as people keep their recordings: 16 FSDD files of each of its 6 speakers."""
    folder = tmp_path_factory.mktemp("my_recordings")
    files = sorted((CORPORA / "fsdd" / "recordings").glob("*.wav"))
    for speaker in sorted({p.name.split("_")[1] for p in files}):
        for p in [p for p in files if p.name.split("_")[1] == speaker][::31][:16]:
            (folder / speaker).mkdir(exist_ok=True)
            (folder / speaker / p.name).symlink_to(p)
            (folder / speaker / p.name).with_suffix(".txt").write_text(DIGITS[int(p.name[0])] + "\n")
    return folder


def test_custom_recipe_runs_all_stages_on_a_users_folder(user_folder, tmp_path):
    data = tmp_path / "data"
    run = subprocess.run(["make", "-C", str(ROOT), "recipe", "RECIPE=custom", f"SOURCE={user_folder}",
                          f"DATA={data}", "EXTRA=epochs=2 threads=1 model.hidden=48 model.conv_channels=48"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for n, name in enumerate(["prepare", "stats", "train", "lm", "tune", "decode", "score", "report"], 1):
        assert f"stage {n} {name}" in run.stdout
    assert len(re.findall(r"^%WER \d+\.\d\d \[ \d+ / \d+,", run.stdout, re.M)) == 2
    splits = {name: read_manifest(data / f"{name}.jsonl") for name in ("train", "dev", "test")}
    speakers = {name: {u.speaker for u in us} for name, us in splits.items()}
    assert all(speakers.values()) and not (speakers["train"] & speakers["dev"] or speakers["train"] & speakers["test"]
                                           or speakers["dev"] & speakers["test"])       # whole speakers held out
    assert sum(len(us) for us in splits.values()) == 96
    cfg = load_config(TrainConfig, data / "config.yaml")                               # sized to 0.01 h of audio
    assert (cfg.model.hidden, cfg.model.layers) == (128, 2) and cfg.epochs == 80
    assert (data / "exp" / "custom" / "report.html").exists()
    assert (data / "lm" / "lm.arpa").exists()


def test_every_source_form_is_detected_and_held_out(user_folder, an4_test_utts, tmp_path):
    utts = read_manifest_of_folder(user_folder, tmp_path)
    csv = tmp_path / "list.csv"
    csv.write_text("path,text\n" + "".join(f"{u.audio},{u.text.lower()}\n" for u in utts))
    nemo = tmp_path / "nemo.json"
    nemo.write_text("".join(json.dumps({"audio_filepath": u.audio, "duration": u.duration, "text": u.text.lower()})
                            + "\n" for u in utts))
    export_kaldi(an4_test_utts[:40], tmp_path / "kaldi")
    sources = {"folder": user_folder, "csv": csv, "manifest": nemo, "kaldi": tmp_path / "kaldi"}
    for kind, source in sources.items():
        assert source_kind(source) == kind
        out = tmp_path / f"out_{kind}"
        asr_main(["prepare", "custom", "--corpus", str(source), "--out", str(out)])
        split = {n: read_manifest(out / f"{n}.jsonl") for n in ("train", "dev", "test")}
        assert all(split.values()) and sum(map(len, split.values())) == (40 if kind == "kaldi" else 96), kind
        assert all(u.text == u.text.upper() for us in split.values() for u in us)          # normalised
        assert (out / "config.yaml").exists()
    with pytest.raises(ValueError, match="not a form this recipe reads"):
        source_kind(write_text(tmp_path / "notes.txt", "hello"))


def read_manifest_of_folder(folder, tmp_path):
    asr_main(["prepare", "folder", "--corpus", str(folder), "--out", str(tmp_path / "f")])
    return read_manifest(tmp_path / "f" / "all.jsonl")


def write_text(path, text):
    path.write_text(text)
    return path


def test_hold_out_by_utterance_without_speakers_and_configs_grow_with_the_data(an4_test_utts):
    from dataclasses import replace

    anonymous = [replace(u, speaker="") for u in an4_test_utts]
    split = hold_out(anonymous)
    assert sum(map(len, split.values())) == len(anonymous) and all(split.values())
    for name in ("dev", "test"):
        share = sum(u.duration for u in split[name]) / sum(u.duration for u in anonymous)
        assert 0.1 <= share < 0.15, (name, share)
    assert hold_out(anonymous) == split                                   # reproducible
    sizes = [load_model_size(scaled_config(h)) for h in (0.1, 1.0, 5.0, 50.0, 960.0)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 5


def load_model_size(text: str) -> int:
    import yaml

    model = yaml.safe_load(text)["model"]
    return model["hidden"] * model["layers"]


def test_the_recipe_says_what_it_needs_without_a_source(tmp_path):
    run = subprocess.run(["make", "-C", str(ROOT / "recipes" / "custom"), "all", f"DATA={tmp_path}"],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "SOURCE=" in run.stderr and "is needed" in run.stderr


def test_custom_recipe_on_a_common_voice_folder_of_a_language_it_has_never_seen(tmp_path):
    """A Common Voice locale folder (clips/ and its TSVs, no split) whose locale the code knows nothing of: every
    stage runs with no language argument, the alphabet comes from the data, and the score is in %CER too."""
    source = tmp_path / "cv-corpus" / "xx"
    (source / "clips").mkdir(parents=True)
    persian = CORPORA / "commonvoice_fa" / "fa"
    for name in ("validated.tsv", "other.tsv"):
        lines = (persian / name).read_text(encoding="utf-8").splitlines()
        header = lines[0].split("\t")
        rows = [dict(zip(header, line.split("\t"))) for line in lines[1:]][:150 if name == "other.tsv" else None]
        for row in rows:
            row["locale"] = ""                                          # no locale: the folder's name, xx
            (source / "clips" / row["path"]).symlink_to(persian / "clips" / row["path"])
        (source / name).write_text("\n".join(["\t".join(header), *("\t".join(r[k] for k in header) for r in rows)])
                                   + "\n", encoding="utf-8")
    data = tmp_path / "data"
    run = subprocess.run(["make", "-C", str(ROOT), "recipe", "RECIPE=custom", f"SOURCE={source}", f"DATA={data}",
                          "EXTRA=epochs=2 threads=1 model.hidden=48 model.conv_channels=48"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for n, name in enumerate(["prepare", "stats", "train", "lm", "tune", "decode", "score", "report"], 1):
        assert f"stage {n} {name}" in run.stdout
    assert len(re.findall(r"^%CER \d+\.\d\d \[ \d+ / \d+,", run.stdout, re.M)) == 2
    text = load_config(TrainConfig, data / "config.yaml").text
    assert (text.charset, text.language, text.case) == ("data", "xx", "lower")
    train = read_manifest(data / "train.jsonl")
    assert train and all("ARABIC" in unicodedata.name(c, "") for u in train for c in u.text if c != " ")


@pytest.fixture(scope="module")
def librispeech_folder(tmp_path_factory):
    """Recordings no recipe here was tuned on, as a user keeps them: the six shortest sentences of each of the
    eight mini LibriSpeech speakers in ../shared/corpora, speaker/<id>.flac + .txt."""
    from asr.corpora.librispeech import read_librispeech

    folder = tmp_path_factory.mktemp("my_english")
    utts = read_librispeech(CORPORA / "mini_librispeech" / "LibriSpeech" / "train-clean-5")
    for speaker in sorted({u.speaker for u in utts}):
        for u in sorted((u for u in utts if u.speaker == speaker), key=lambda u: (u.duration, u.id))[:6]:
            (folder / speaker).mkdir(exist_ok=True)
            (folder / speaker / f"{u.id}.flac").symlink_to(u.audio)
            (folder / speaker / f"{u.id}.txt").write_text(u.text + "\n")
    return folder


def test_init_starts_a_recipe_from_a_trained_model_and_beats_starting_from_zero(librispeech_folder, an4_model,
                                                                                tmp_path):
    """`make recipe RECIPE=custom SOURCE=... INIT=checkpoint`: training starts from the checkpoint (its shape, its
    features), and in the same epochs reaches a lower %CER than the same command from zero."""
    cer = {}
    for name, init in (("scratch", []), ("init", [f"INIT={an4_model}"])):
        data = tmp_path / name
        run = subprocess.run(["make", "-C", str(ROOT), "recipe", "RECIPE=custom", f"SOURCE={librispeech_folder}",
                              f"DATA={data}", "EXTRA=epochs=4 threads=1", *init], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        cer[name] = float(re.findall(r"^%CER (\d+\.\d\d)", run.stdout, re.M)[0])      # greedy
        config = json.loads((data / "exp" / "custom" / "config.json").read_text())
        if init:
            assert config["init_from"] == str(an4_model) and config["model"]["hidden"] == 160   # the AN4 model's
            assert "initialised from" in run.stdout and "29 of its 29 rows" in run.stdout
        else:
            assert config["init_from"] == "" and config["model"]["hidden"] == 128             # sized to the data
    assert cer["init"] < cer["scratch"] - 5, cer
