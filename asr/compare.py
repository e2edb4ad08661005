"""Several runs side by side: a markdown table and plots of their gradients and dev curves.

    asr compare data/an4/exp/cells/rnn_clip5 data/an4/exp/cells/gru_clip5 ... \
        --manifest data/an4/test.jsonl --out data/an4/exp/cells

Per run (an exp dir written by `asr train`, decoded greedily on test into decode_test/ if you
want test scores in the table): cell, size, parameters, clipping, epochs, training time, best dev
WER, test WER / CER, and the gradient norm over all steps (median, max, share of steps clipped),
read from TensorBoard's per-step `train/grad_norm` (train_log.jsonl's epoch summaries without it).
Plots: grad_norms.png (norm per step, log scale, the clipping threshold dashed), dev_wer.png, and
gradient_reach.png (asr.gradients: how far back a gradient reaches through each trained model's
recurrent stack, and through the same architecture at initialisation).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .report import plt, read_log, read_scores
from .step import norm_summary


def grad_norm_history(exp: Path) -> list[tuple[int, float]]:
    """(step, gradient norm before clipping) for every logged step, from the run's TensorBoard events."""
    board = exp / "tensorboard"
    if not board.exists():
        return []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(board), size_guidance={"scalars": 0})  # 0: keep every step
    events.Reload()
    if "train/grad_norm" not in events.Tags().get("scalars", []):
        return []
    return [(e.step, e.value) for e in events.Scalars("train/grad_norm")]


def summarize(exp: str | Path, history: list[tuple[int, float]] | None = None) -> dict:
    """One run's row: config, parameters, time, dev and test scores, gradient-norm statistics
    (from `history`, the run's grad_norm_history, read here when not given)."""
    exp = Path(exp)
    config = json.loads((exp / "config.json").read_text())
    model, log = config["model"], read_log(exp)
    if not log:
        raise ValueError(f"{exp}: no train_log.jsonl; is this an experiment dir written by asr train?")
    ckpt = torch.load(exp / "best.pt", map_location="cpu", weights_only=True)
    best = min(log, key=lambda r: r.get("dev_wer", float("inf")))
    norms = [v for _, v in (grad_norm_history(exp) if history is None else history)]
    clip = config.get("clip_norm", 0) or 0
    row = {
        "run": exp.name, "cell": model["cell"], "layers": model["layers"], "hidden": model["hidden"],
        "parameters": sum(t.numel() for t in ckpt["model"].values()), "clip_norm": clip,
        "epochs": len(log), "train_seconds": sum(r["seconds"] for r in log), "wall_seconds": log[-1].get("elapsed"),
        "device": log[-1].get("device", "?"), "best_dev_wer": best.get("dev_wer"), "best_epoch": best["epoch"],
        "final_loss": log[-1]["loss"], "skipped_steps": log[-1].get("skipped_steps", 0),
        "test": read_scores(exp / "decode_test"),
    }
    if norms:
        row["grad_norm"] = norm_summary(norms, clip)
    return row


def markdown_table(rows: list[dict]) -> str:
    lines = ["| run | cell | layers x hidden | parameters | clip | epochs | training time | best dev %WER (epoch) "
             "| test %WER | test %CER | grad norm median / max | steps clipped |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        test, g = r["test"] or {}, r.get("grad_norm")
        lines.append("| " + " | ".join([
            r["run"], r["cell"].upper() if r["cell"] != "rnn" else "vanilla RNN (tanh)",
            f"{r['layers']}x{r['hidden']}", f"{r['parameters'] / 1e6:.3f} M",
            f"{r['clip_norm']:g}" if r["clip_norm"] else "none", str(r["epochs"]),
            f"{r['train_seconds'] / 60:.1f} min", f"{r['best_dev_wer']:.2f} ({r['best_epoch']})",
            f"{test['wer']:.2f}" if "wer" in test else "-", f"{test['cer']:.2f}" if "cer" in test else "-",
            f"{g['median']:.2f} / {g['max']:.1f}" if g else "-",
            f"{100 * g['clipped']:.0f}%" if g and r["clip_norm"] else "-"]) + " |")
    return "\n".join(lines) + "\n"


def plot_grad_norms(histories: list[list[tuple[int, float]]], rows: list[dict], out: Path) -> Path:
    """Per-step gradient norm of each run, runs with clipping on the left, without on the right."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for history, row in zip(histories, rows):
        if not history:
            continue
        ax = axes[0 if row["clip_norm"] else 1]
        ax.plot([s for s, _ in history], [v for _, v in history], lw=0.6, alpha=0.8, label=row["run"])
    clips = sorted({r["clip_norm"] for r in rows if r["clip_norm"]})
    for clip in clips:
        axes[0].axhline(clip, ls="--", color="k", lw=0.8)
    axes[0].set_title("with clipping" + (f" (dashed: {', '.join(f'{c:g}' for c in clips)})" if clips else ""))
    axes[1].set_title("without clipping")
    for ax in axes:
        ax.set(xlabel="step", yscale="log")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    axes[0].set_ylabel("gradient norm before clipping")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def plot_dev_wer(exps: list[Path], rows: list[dict], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for exp, row in zip(exps, rows):
        log = read_log(exp)
        ax.plot([r["epoch"] for r in log], [r.get("dev_wer") for r in log], label=row["run"],
                ls="-" if row["clip_norm"] else "--")
    ax.set(xlabel="epoch", ylabel="dev %WER", ylim=(0, 100), title="dev WER per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def plot_reach(exps: list[Path], rows: list[dict], waves: list[torch.Tensor], out: Path,
               max_distance: int = 100) -> tuple[Path, dict]:
    """gradient_reach of each trained model (solid) and of its architecture at initialisation (dashed,
    once per distinct architecture) -> (PNG, {label: log10 norms})."""
    from .checkpoint import load_checkpoint
    from .gradients import gradient_reach
    from .model import AcousticModel

    curves, seen = {}, set()
    fig, ax = plt.subplots(figsize=(7, 4))
    for exp, row in zip(exps, rows):
        model, extractor, _, _ = load_checkpoint(exp / "best.pt")
        reach = gradient_reach(model, extractor, waves, max_distance)
        curves[row["run"]] = reach.tolist()
        line, = ax.plot(reach.numpy(), label=f"{row['run']} (trained)")
        if model.cfg not in seen:
            seen.add(model.cfg)
            with torch.random.fork_rng():             # a fixed initialisation, the caller's RNG untouched
                torch.manual_seed(0)
                fresh = AcousticModel(model.cfg)
            init = gradient_reach(fresh, extractor, waves, max_distance)
            curves[f"{row['cell']} {row['layers']}x{row['hidden']} at init"] = init.tolist()
            ax.plot(init.numpy(), ls="--", color=line.get_color(), label=f"{row['cell']} at initialisation")
    ax.set(xlabel="distance back in time k (20 ms frames)", ylabel="log10 || d y_T / d x_(T-k) ||",
           title=f"how far back gradients reach ({len(waves)} utterances)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out, curves


def compare_runs(exps: list[str | Path], out: str | Path, manifest: str | Path | None = None,
                 reach_utts: int = 20, max_distance: int = 100) -> str:
    """Write compare.md, compare.json and the plots into `out`; returns the markdown table.
    `manifest`: utterances for the gradient-reach plot (its first `reach_utts`); none: no such plot."""
    exps, out = [Path(e) for e in exps], Path(out)
    out.mkdir(parents=True, exist_ok=True)
    histories = [grad_norm_history(e) for e in exps]   # TensorBoard events, read once per run
    rows = [summarize(e, h) for e, h in zip(exps, histories)]
    table = markdown_table(rows)
    plot_grad_norms(histories, rows, out / "grad_norms.png")
    plot_dev_wer(exps, rows, out / "dev_wer.png")
    result = {"runs": rows}
    if manifest:
        from .data import read_manifest

        waves = [u.samples() for u in read_manifest(manifest)[:reach_utts]]
        _, result["gradient_reach_log10"] = plot_reach(exps, rows, waves, out / "gradient_reach.png", max_distance)
    (out / "compare.md").write_text(table, encoding="utf-8")
    (out / "compare.json").write_text(json.dumps(result, indent=1))
    return table
