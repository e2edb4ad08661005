"""The AN4 recipe end to end, through its Makefile, on a small real subset (CPU, about a minute)."""
import json
import re
import subprocess
from pathlib import Path

import pytest

import asr
from asr.data import read_manifest

ROOT = Path(__file__).resolve().parents[1]


def _make(*args):
    return subprocess.run(["make", "-C", str(ROOT / "recipes" / "an4"), *args], capture_output=True, text=True)


def _git_status() -> str:
    """`git status` of the checkout's tracked files (empty outside a git checkout)."""
    run = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                         capture_output=True, text=True)
    return run.stdout if run.returncode == 0 else ""


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    data = tmp_path_factory.mktemp("an4")
    args = [f"DATA={data}", "MAX_UTTS=40", "N=small",
            "EXTRA=epochs=2 threads=1 model.hidden=64 model.conv_channels=64 model.layers=2"]
    tracked = _git_status()
    first = _make("all", *args)
    assert _git_status() == tracked, "make all changed a tracked file"
    assert first.returncode == 0, first.stdout + first.stderr
    return data, args, first.stdout


def test_all_stages_run_and_print_wer(small_run):
    data, _, out = small_run
    for n, name in enumerate(["prepare", "stats", "train", "lm", "tune", "decode", "score", "report"], 1):
        assert f"stage {n} {name}" in out
    assert len(re.findall(r"^%WER \d+\.\d\d \[ \d+ / \d+, \d+ ins, \d+ del, \d+ sub \]$", out, re.M)) == 2
    assert len(re.findall(r"^%CER \d+\.\d\d ", out, re.M)) == 2       # greedy, then with the LM
    exp = data / "exp" / "small"
    for f in ["stats.json", "best.pt", "last.pt", "train_log.jsonl", "decoding.json", "decode_test/hyp.txt",
              "decode_test/wer.txt", "decode_test/per_utt.tsv", "decode_test/alignment.txt",
              "decode_test_lm/hyp.txt", "decode_test_lm/wer.txt"]:
        assert (exp / f).exists(), f
    for f in ["lm.arpa", "lexicon.txt"]:
        assert (data / "lm" / f).exists(), f
    assert len((exp / "decode_test" / "hyp.txt").read_text().splitlines()) == 10
    # the model file alone is enough to transcribe, from a script
    first_test = read_manifest(data / "test.jsonl")[0]
    assert isinstance(asr.load_model(exp / "best.pt").transcribe(first_test.audio).text, str)


def test_done_stages_are_skipped(small_run):
    data, args, _ = small_run
    again = _make("all", *args, "STOP_STAGE=4")
    assert again.returncode == 0, again.stderr
    for n, name in enumerate(["prepare", "stats", "train", "lm"], 1):
        assert re.search(rf"^stage {n} {name}: .*: done, skipping", again.stdout, re.M), again.stdout
    assert "stage 5" not in again.stdout and "%WER" not in again.stdout  # outside the range


def test_a_run_from_zero_is_not_taken_for_one_from_a_trained_model(small_run, an4_model):
    """`make ... INIT=model` into an experiment dir whose run started from zero would otherwise skip training as
    done and report that model as the fine-tuned one: it is refused, naming both, and the dir is left as it was."""
    data, args, _ = small_run
    best = data / "exp" / "small" / "best.pt"
    before = best.read_bytes()
    run = _make("train", *args, f"INIT={an4_model}")
    assert run.returncode != 0 and "done, skipping" not in run.stdout
    assert f"holds a run started from zero, not from {an4_model}: give this one its own N=" in run.stderr, run.stderr
    assert best.read_bytes() == before
    assert _make("train", *args).returncode == 0                     # from zero, as it was: done, skipped


def test_a_done_train_stage_is_not_taken_for_one_with_other_arguments(small_run, tmp_path):
    """The train stage's marker records what the run was made with (the config's contents, the data, the starting
    point, EXTRA): `make` with another EXTRA or an edited config into the same experiment dir is refused, naming
    both, where it used to skip training as done and report the old model as the new run's; the same arguments
    (the config at another path, its contents the same) still skip."""
    data, args, _ = small_run
    best = data / "exp" / "small" / "best.pt"
    before = best.read_bytes()
    extra = next(a for a in args if a.startswith("EXTRA="))
    others = [a for a in args if a != extra]
    run = _make("train", *others, extra.replace("epochs=2", "epochs=7"))
    assert run.returncode != 0 and "done, skipping" not in run.stdout
    assert "was made with" in run.stderr and "EXTRA: epochs=2 " in run.stderr and "EXTRA: epochs=7 " in run.stderr
    assert "give this run its own N=" in run.stderr, run.stderr
    config = (ROOT / "recipes" / "an4" / "conf" / "cpu.yaml").read_text()
    (tmp_path / "same.yaml").write_text(config)
    (tmp_path / "edited.yaml").write_text(config.replace("dropout: 0.3", "dropout: 0.2"))
    edited = _make("train", *args, f"CONFIG={tmp_path / 'edited.yaml'}")
    assert edited.returncode != 0 and "give this run its own N=" in edited.stderr, edited.stdout + edited.stderr
    same = _make("train", *args, f"CONFIG={tmp_path / 'same.yaml'}")
    assert same.returncode == 0 and "done, skipping" in same.stdout, same.stdout + same.stderr
    assert best.read_bytes() == before


def test_an_lm_built_with_other_arguments_is_built_again_and_tuned_with(small_run):
    """The lm stage's marker records its arguments: the recipe's LM_ARGS changed (as a checkout's update does),
    the LM is built again rather than skipped, and tune runs again with it (the marker newer than its own)."""
    data, args, _ = small_run
    arpa = data / "lm" / "lm.arpa"
    assert re.search(r"^ngram 6=\d+$", arpa.read_text(), re.M)           # the recipe's order
    lower = _make("lm", "tune", *args, "LM_ARGS=--order 4 --transcript-weight 3")
    assert lower.returncode == 0, lower.stdout + lower.stderr
    assert "running it again" in lower.stdout and "stage 5 tune: LM" in lower.stdout, lower.stdout
    assert "done, skipping" not in lower.stdout and re.search(r"^ngram 4=\d+$", arpa.read_text(), re.M)
    back = _make("lm", "tune", *args)
    assert back.returncode == 0 and "running it again" in back.stdout, back.stdout + back.stderr
    assert re.search(r"^ngram 6=\d+$", arpa.read_text(), re.M)
    assert _make("lm", *args).stdout.count("done, skipping") == 1


def test_a_model_trained_again_is_tuned_and_decoded_again(small_run):
    """tune and decode read best.pt: one newer than their markers (training run again) runs them again, rather
    than scoring the old model's transcripts as the new one's; untouched, they skip."""
    data, args, _ = small_run
    exp = data / "exp" / "small"
    assert _make("tune", "decode", *args).returncode == 0                # up to date with the tests before
    skipped = _make("tune", "decode", *args)
    assert skipped.returncode == 0 and skipped.stdout.count("done, skipping") == 2, skipped.stdout
    hyp = exp / "decode_test" / "hyp.txt"
    hyp.write_text("stale\n")
    (exp / "best.pt").touch()
    again = _make("tune", "decode", *args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "done, skipping" not in again.stdout and "stage 5 tune" in again.stdout and "stage 6 decode" in again.stdout
    assert hyp.read_text() != "stale\n" and len(hyp.read_text().splitlines()) == 10


def test_stage_range_runs_only_that_range(small_run):
    data, args, _ = small_run
    only = _make("all", *args, "STAGE=7", "STOP_STAGE=7")
    assert only.returncode == 0 and "stage 7 score" in only.stdout and "stage 1" not in only.stdout


def test_fsdd_recipe_trains_the_shipped_default_to_an_accuracy_on_held_out_recordings(tmp_path):
    """The FSDD recipe through its Makefile (full prepare, 3000 files) with the model `make recipe` ships: AN4's
    default config (2-D front end, 30 ms frames, fbank, speed perturbation, dropout) for 7 epochs, not its
    time budget, so the result does not hang on the machine (batches of 10 s: 0.4-s digits), on one thread as
    each test worker has one core (the config's two threads beside the other worker took 634 s instead of 81 on
    a Xeon), then its LM, decoding and scoring of the 300 held-out test recordings. It learns them: 12 % WER
    greedy and 4 % with the 10-word lexicon on a 2-core EPYC, 9.67 / 3.33 on a Xeon (a model that learnt
    nothing scores 90-100)."""
    default = ROOT / "recipes" / "an4" / "conf" / "cpu.yaml"
    run = subprocess.run(["make", "-C", str(ROOT / "recipes" / "fsdd"), "all", f"DATA={tmp_path}", "N=default",
                          f"RESULTS={tmp_path / 'RESULTS.md'}", f"CONFIG={default}",
                          "EXTRA=time_budget=0 epochs=7 batch_frames=1000 keep_epochs=1 threads=1"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    for n, name in enumerate(["prepare", "stats", "train", "lm", "tune", "decode", "score"], 1):
        assert f"stage {n} {name}" in run.stdout
    assert "lexicon of 10 words" in run.stdout
    wer = [float(w) for w in re.findall(r"^%WER (\d+\.\d\d) \[ \d+ / 300,", run.stdout, re.M)]  # 300 digits, twice
    assert len(wer) == 2 and wer[0] < 25 and wer[1] < 10, wer                      # greedy, then with the LM


def test_vctk_recipe_runs_end_to_end(tmp_path):
    """The VCTK recipe through its Makefile: prepare (503 real p239 sentences), one epoch of a tiny model,
    LM and lexicon, tuning, decoding, scoring and the report."""
    run = subprocess.run(["make", "-C", str(ROOT / "recipes" / "vctk"), "all", f"DATA={tmp_path}", "N=tiny",
                          f"RESULTS={tmp_path / 'RESULTS.md'}",
                          "EXTRA=epochs=1 model.hidden=32 model.conv_channels=32 model.layers=1"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for n, name in enumerate(["prepare", "stats", "train", "lm", "tune", "decode", "score", "report"], 1):
        assert f"stage {n} {name}" in run.stdout
    assert "train: 401 utterances" in run.stdout and "rejected: 0 utterance(s)" in run.stdout
    assert len(re.findall(r"^%WER \d+\.\d\d \[ \d+ / 373,", run.stdout, re.M)) == 2   # 51 test sentences, 373 words
    assert (tmp_path / "exp" / "tiny" / "report.html").exists()


def test_recipe_leaves_tensorboard_plots_report_and_a_results_line(small_run):
    """After `make all`: TensorBoard scalars, PNG plots and a self-contained report.html in the exp dir,
    and the score stage's lines in RESULTS.md."""
    import base64
    from html.parser import HTMLParser

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    data, _, out = small_run
    exp = data / "exp" / "small"
    board = EventAccumulator(str(exp / "tensorboard"))
    board.Reload()
    tags = set(board.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "dev/wer", "dev/cer", "train/audio_seconds_per_second",
            "train/skipped_steps"} <= tags, tags
    assert len(board.Scalars("dev/wer")) == 2                                 # one per epoch
    for png in ("curves.png", "utterance.png"):
        assert (exp / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.ids, self.images, self.links, self.cells = [], [], [], []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "h2":
                self.ids.append(a.get("id"))
            if tag == "img":
                self.images.append(a["src"])
            self.links += [v for k, v in attrs if k in ("href", "src") and v and v.startswith(("http", "//"))]

    page = Page()
    page.feed((exp / "report.html").read_text())
    assert page.ids == ["data", "curves", "throughput", "scores", "worst", "utterance", "config"]
    assert len(page.images) == 2 and not page.links                         # self-contained: nothing fetched
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    html_text = (exp / "report.html").read_text()
    assert "decode_test_lm" in html_text and "beam + LM" in html_text and '<span class="' in html_text
    log = (exp / "results.md").read_text()                                  # in the exp dir, not RESULTS.md
    assert "## Score stage log" in log
    rows = [line for line in log.splitlines() if line.startswith("| 20")]
    modes = [r.split("|")[3].strip() for r in rows]                          # a pair per score stage run
    assert modes[:2] == ["greedy", "beam + LM"] and modes == modes[:2] * (len(modes) // 2)
    assert "report -> " in out


def test_make_record_appends_the_score_lines_to_results_when_asked(small_run, tmp_path):
    data, args, _ = small_run
    results = tmp_path / "RESULTS.md"
    results.write_text("# AN4 results\n\nsome table\n")
    run = _make("record", *args, f"RECORD={results}")
    assert run.returncode == 0, run.stdout + run.stderr
    log = (data / "exp" / "small" / "results.md").read_text()
    rows = [line for line in log.splitlines() if line.startswith("| 20")]
    text = results.read_text()
    assert text.startswith("# AN4 results\n\nsome table\n") and all(r in text.splitlines() for r in rows)
    assert f"{len(rows)} line(s) of" in run.stdout
    again = _make("record", *args, f"RECORD={results}")
    assert "0 line(s) of" in again.stdout and results.read_text() == text          # nothing twice


def test_report_renders_in_headless_chromium(small_run, tmp_path):
    """Where Chromium is installed (`apt-get install chromium`), the report renders to a screenshot."""
    import shutil
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed")
    data, _, _ = small_run
    shot = tmp_path / "report.png"
    run = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                          "--window-size=1200,2400", (data / "exp" / "small" / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 20_000


def test_a_recipe_killed_and_run_again_scores_as_if_never_stopped(small_run, tmp_path):
    """SIGKILL to the whole recipe a few seconds into training, then again as decoding starts; each time `make
    all` is run again. Finished stages are skipped, the train stage goes on from its last.pt, a half-done stage
    is done again, and the scores are the uninterrupted run's (small_run: the same data and settings)."""
    import os
    import signal
    import time

    _, args, uninterrupted = small_run
    args = [f"DATA={tmp_path}", *args[1:]]
    scores = lambda out: re.findall(r"^%[WC]ER .*$", out, re.M)
    for trigger, delay in (("stage 3 train", 4.0), ("stage 6 decode", 0.5)):
        proc = subprocess.Popen(["make", "-C", str(ROOT / "recipes" / "an4"), "all", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        said = []
        for line in proc.stdout:
            said.append(line)
            if line.startswith(trigger):
                time.sleep(delay)
                break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        assert not scores("".join(said)), "".join(said)                     # killed before it finished
    final = _make("all", *args)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "stage 1 prepare: " in final.stdout and "done, skipping" in final.stdout
    assert scores(final.stdout) == scores(uninterrupted) and len(scores(final.stdout)) == 4
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "exp" / "small" / "train_log.jsonl").open()]
    assert epochs == [1, 2]                                                # each epoch logged once
