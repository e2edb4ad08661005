"""Seeing a run: curves and an utterance's spectrogram / posteriorgram as PNG, one self-contained report.html.

    asr report data/an4/exp/cpu --manifest data/an4/test.jsonl --results recipes/an4/RESULTS.md

The report embeds its images (base64), needs no network, and shows the run's config, data sizes,
training curves and throughput, the scores of every decode_* dir of the experiment against the
best in the recipe's RESULTS.md, the worst utterances aligned with their errors marked, and one
utterance as the network sees it.
"""
from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from .decode import decoding_label  # noqa: E402

RUNS_HEADING = "## Score stage log"
RUN_FIELDS = ("date", "config", "decoding", "wer", "cer", "device", "wall", "exp")   # RUNS_HEADER's columns
RUNS_HEADER = ("| date | config | decoding | test %WER | test %CER | device | training wall time | exp |\n"
               "|---|---|---|---|---|---|---|---|\n")


def read_log(exp: Path) -> list[dict]:
    path = exp / "train_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def plot_curves(log: list[dict], out: Path) -> Path:
    """Training loss and dev WER / CER per epoch, side by side -> `out` (PNG)."""
    epochs = [r["epoch"] for r in log]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(epochs, [r["loss"] for r in log], color="tab:blue")
    a.set(xlabel="epoch", ylabel="CTC loss per utterance", title="training loss", yscale="log")
    b.plot(epochs, [r.get("dev_wer") for r in log], label="dev %WER", color="tab:red")
    b.plot(epochs, [r.get("dev_cer") for r in log], label="dev %CER", color="tab:orange")
    b.set(xlabel="epoch", ylabel="%", title="dev error rates", ylim=(0, 100))
    b.legend()
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def plot_utterance(transcriber, audio, out: Path, title: str = "") -> Path:
    """Log-mel spectrogram above the CTC posteriorgram (each frame's top tokens), decoded words at their
    times -> `out` (PNG)."""
    import torch

    from .audio import load_audio
    from .features import FeatureExtractor

    wave = load_audio(audio, transcriber.sample_rate)
    extractor = FeatureExtractor(transcriber.backend.features)                          # un-normalised: no stats
    feats, _ = extractor.raw(wave[None], torch.tensor([wave.shape[0]]))                 # (1, T, F)
    log_probs, lengths = transcriber.log_probs([wave])                                  # (1, T', V)
    probs = log_probs[0, :lengths[0]].exp()                                             # (T', V)
    result = transcriber.transcribe(wave)
    top = probs.max(0).values.argsort(descending=True)[:12].sort().values               # tokens worth a row
    tokens = transcriber.vocab.tokens
    names = ["␣" if tokens[i] == " " else "∅" if i == 0 else tokens[i].replace("\u2581", "_") for i in top.tolist()]
    seconds = wave.shape[0] / transcriber.sample_rate
    fig, (a, b) = plt.subplots(2, 1, figsize=(10, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    a.imshow(feats[0].T.cpu().numpy(), origin="lower", aspect="auto", extent=(0, seconds, 0, feats.shape[2]),
             cmap="magma")
    a.set(ylabel="mel band", title=title or "log-mel spectrogram and CTC posteriors")
    b.imshow(probs[:, top].T.numpy(), origin="lower", aspect="auto", cmap="Blues", vmin=0, vmax=1,
             extent=(0, probs.shape[0] * transcriber.frame_seconds, -0.5, len(top) - 0.5))
    b.set_yticks(range(len(top)), names)
    b.set(xlabel="seconds", ylabel="token")
    for w in result.words:                                    # each word over its span, on both panels
        for ax in (a, b):
            ax.axvspan(w.start, w.end, color="white" if ax is a else "tab:green", alpha=0.12)
        a.text((w.start + w.end) / 2, feats.shape[2] * 0.92, w.text, ha="center", va="top", color="white",
               fontsize=9, fontweight="bold")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def read_scores(decode_dir: Path) -> dict | None:
    """{'wer', 'cer', 'words', 'ins', 'del', 'sub', ...} from a decode dir's wer.txt (None without one)."""
    path = decode_dir / "wer.txt"
    if not path.exists():
        return None
    out = {}
    for name, rate, err, total, ins, dels, subs in re.findall(
            r"%(WER|CER) ([\d.]+) \[ (\d+) / (\d+), (\d+) ins, (\d+) del, (\d+) sub \]", path.read_text()):
        key = name.lower()
        out.update({key: float(rate), f"{key}_errors": int(err), f"{key}_total": int(total),
                    f"{key}_ins": int(ins), f"{key}_del": int(dels), f"{key}_sub": int(subs)})
    return out or None


def previous_best(results: Path | None, decoding: str) -> float | None:
    """The lowest test %WER logged for `decoding` in RESULTS.md's score stage log."""
    if results is None or not results.exists():
        return None
    text = results.read_text()
    if RUNS_HEADING not in text:
        return None
    rates = []
    for line in text.split(RUNS_HEADING, 1)[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[2] == decoding:
            try:
                rates.append(float(cells[3]))
            except ValueError:
                pass
    return min(rates) if rates else None


def append_result(results: Path, row: dict) -> None:
    """Add one line to RESULTS.md's score stage log (made at the end of the file the first time)."""
    text = results.read_text() if results.exists() else ""
    if RUNS_HEADING not in text:
        text = text.rstrip("\n") + ("\n\n" if text else "") + RUNS_HEADING + (
            " (one line per `make score`, appended by `asr score --results`)\n\n") + RUNS_HEADER
    cells = [row[k] for k in RUN_FIELDS]
    results.write_text(text.rstrip("\n") + "\n| " + " | ".join(str(c) for c in cells) + " |\n")


def log_score(results: str | Path, score, hyp: str | Path, manifest: str | Path, exp: str | Path | None = None,
              config: str | None = None) -> None:
    """Append a decode's score to a recipe's RESULTS.md (`asr score --results`): date, config, how the hypotheses
    were decoded (their dir's decoding.json) and on which test set, WER / CER, the run's device and training time.
    `exp`: the run (default: the hypotheses' dir's parent)."""
    import datetime

    exp = Path(exp) if exp else Path(hyp).parent.parent
    log = read_log(exp)
    decoding = decoding_label(Path(hyp).parent)
    if Path(manifest).stem != "test":       # a recipe with several test sets (librispeech: test-clean, -other)
        decoding += f", {Path(manifest).stem}"
    append_result(Path(results), {
        "date": datetime.date.today().isoformat(), "config": config or "-", "decoding": decoding,
        "wer": f"{score.wer.rate:.2f}", "cer": f"{score.cer.rate:.2f}",
        "device": log[-1].get("device", "?") if log else "?",
        "wall": f"{log[-1].get('elapsed', 0) / 60:.1f} min" if log else "?", "exp": exp.name})


def record_results(run_log: str | Path, results: str | Path) -> int:
    """Append the score lines of a run's log (`make score` writes exp/<name>/results.md) to a recipe's
    RESULTS.md, skipping lines it already holds; returns how many were added."""
    rows = [line for line in Path(run_log).read_text().splitlines() if line.startswith("| ") and
            not line.startswith("| date") and set(line) - set("|- ")]
    results = Path(results)
    held = set(results.read_text().splitlines()) if results.exists() else set()
    added = 0
    for row in rows:
        if row not in held:
            cells = [c.strip() for c in row.strip("|").split("|")]
            append_result(results, dict(zip(RUN_FIELDS, cells)))
            added += 1
    return added


def aligned_html(ref: str, hyp: str) -> tuple[str, str]:
    """Reference and hypothesis as HTML with substituted, deleted and inserted words marked."""
    import jiwer

    r, h = ref.split(), hyp.split()
    if not r:
        return "", " ".join(f'<span class="ins">{html.escape(w)}</span>' for w in h)
    out_r, out_h = [], []
    for c in jiwer.process_words(ref, hyp if hyp.strip() else "").alignments[0]:
        rs, hs = r[c.ref_start_idx:c.ref_end_idx], h[c.hyp_start_idx:c.hyp_end_idx]
        if c.type == "equal":
            out_r += map(html.escape, rs)
            out_h += map(html.escape, hs)
        elif c.type == "substitute":
            out_r += [f'<span class="sub">{html.escape(w)}</span>' for w in rs]
            out_h += [f'<span class="sub">{html.escape(w)}</span>' for w in hs]
        elif c.type == "delete":
            out_r += [f'<span class="del">{html.escape(w)}</span>' for w in rs]
            out_h += ['<span class="del">***</span>'] * len(rs)
        else:
            out_r += ['<span class="ins">***</span>'] * len(hs)
            out_h += [f'<span class="ins">{html.escape(w)}</span>' for w in hs]
    return " ".join(out_r), " ".join(out_h)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td dir='auto'>{c}</td>" for c in row) + "</tr>" for row in rows)  # RTL text too
    return f"<table><tr>{head}</tr>{body}</table>"


def _manifest_size(path: str | None) -> tuple[int, float] | None:
    if not path or not Path(path).exists():
        return None
    from .data import read_manifest

    utts = read_manifest(path)
    return len(utts), sum(u.duration for u in utts) / 3600


STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f0f0f0}.sub{background:#ffe08a}.del{background:#ffb3b3;text-decoration:line-through}
.ins{background:#b3d9ff}img{max-width:100%}pre{background:#f7f7f7;padding:0.6em;overflow-x:auto}
.better{color:#080}.worse{color:#b00}"""


def write_report(exp: str | Path, manifest: str | Path | None = None, results: str | Path | None = None,
                 worst: int = 10) -> Path:
    """Write exp/report.html (and exp/curves.png, exp/utterance.png); returns the report's path."""
    from .data import read_manifest
    from .transcribe import load_model

    exp = Path(exp)
    results = Path(results) if results else None
    config = json.loads((exp / "config.json").read_text()) if (exp / "config.json").exists() else {}
    log = read_log(exp)
    sections = [f"<h1>Experiment {html.escape(exp.name)}</h1><p>{html.escape(str(exp))}</p>"]

    sizes = [[name, *(f"{n}" for n in (size[0],)), f"{size[1]:.2f}"]
             for name, path in (("train", config.get("train_manifest")), ("dev", config.get("dev_manifest")),
                                ("test", str(manifest) if manifest else None))
             if (size := _manifest_size(path))]
    sections.append('<h2 id="data">Data</h2>' + _table(sizes, ["set", "utterances", "hours"]))

    if log:
        plot_curves(log, exp / "curves.png")
        speed = [r["audio_seconds"] / r["seconds"] for r in log if r.get("seconds")]
        best = min(log, key=lambda r: r.get("dev_wer", 1e9))
        sections.append('<h2 id="curves">Training curves</h2>' + _img(exp / "curves.png", "loss and dev WER curves")
                        + f"<p>{len(log)} epochs; best dev %WER {best.get('dev_wer', float('nan')):.2f} at epoch "
                        f"{best['epoch']}; training wall time {log[-1].get('elapsed', 0) / 60:.1f} min.</p>")
        sections.append('<h2 id="throughput">Throughput</h2>' + _table(
            [[f"{sum(speed) / len(speed):.0f}", f"{max(speed):.0f}", f"{log[-1].get('skipped_steps', 0)}",
              html.escape(str(log[-1].get("device", "")))]],
            ["mean audio-s/s (training)", "best epoch audio-s/s", "skipped steps", "device"]))

    rows, worst_html = [], []
    refs = {u.id: u.text for u in read_manifest(manifest)} if manifest else {}
    for d in sorted(p for p in exp.glob("decode_*") if p.is_dir()):
        s = read_scores(d)
        if s is None:
            continue
        mode = decoding_label(d)
        prev = previous_best(results, mode)
        versus = "" if prev is None else (
            f'<span class="{"better" if s["wer"] <= prev else "worse"}">{s["wer"] - prev:+.2f} vs {prev:.2f}</span>')
        rows.append([html.escape(d.name), mode, f"{s['wer']:.2f}", f"{s.get('cer', float('nan')):.2f}",
                     s["wer_ins"], s["wer_del"], s["wer_sub"], s["wer_total"], versus or "–"])
        per_utt = d / "per_utt.tsv"
        if per_utt.exists():
            lines = [line.split("\t") for line in per_utt.read_text(encoding="utf-8").splitlines()[1:] if line]
            lines = sorted(lines, key=lambda c: (-int(c[1]), c[0]))[:worst]
            cells = [[html.escape(c[0]), c[1], *aligned_html(c[3], c[4] if len(c) > 4 else "")]
                     for c in lines if int(c[1]) > 0]
            worst_html.append(f"<h3>{html.escape(d.name)}</h3>" + _table(cells, ["utterance", "errors", "reference",
                                                                                   "hypothesis"]))
    sections.append('<h2 id="scores">Scores</h2>' + (_table(rows, [
        "decode dir", "decoding", "%WER", "%CER", "ins", "del", "sub", "words", "vs RESULTS.md best"])
        if rows else "<p>No decode_* dir with a wer.txt yet.</p>"))
    sections.append('<h2 id="worst">Worst utterances</h2><p>Words marked: <span class="sub">substituted</span> '
                    '<span class="del">deleted</span> <span class="ins">inserted</span>.</p>' + "".join(worst_html))

    if (exp / "best.pt").exists() and manifest:
        utts = read_manifest(manifest)
        if utts:
            u = sorted(utts, key=lambda u: u.duration)[len(utts) // 2]            # a typical one: the median length
            plot_utterance(load_model(exp / "best.pt"), u.input, exp / "utterance.png", f"{u.id}: {u.text}")
            sections.append('<h2 id="utterance">What the network sees</h2>'
                            + _img(exp / "utterance.png", f"spectrogram and posteriors of {u.id}")
                            + f"<p>{html.escape(u.id)}, reference: {html.escape(refs.get(u.id, u.text))}</p>")

    sections.append('<h2 id="config">Run config</h2><pre>' + html.escape(json.dumps(config, indent=1)) + "</pre>")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(exp.name)} report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>")
    out = exp / "report.html"
    out.write_text(page, encoding="utf-8")
    return out
