"""The `asr` command as a user meets it: progress bars on a terminal, none in a log."""
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

from asr.data import write_manifest


def _run(args, terminal: bool) -> str:
    """stderr of `asr ARGS`, on a pseudo-terminal or on a pipe (as under CI)."""
    cmd = [sys.executable, "-m", "asr.cli", *args]
    if not terminal:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))   # 120 columns, as a terminal has
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:          # the terminal closes when the process ends
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait() == 0
    os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_progress_bars_on_a_terminal_and_not_in_a_log(an4_test_utts, tmp_path):
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, an4_test_utts[:40])
    args = ["validate", str(manifest)]
    on_terminal, in_log = _run(args, terminal=True), _run(args, terminal=False)
    assert "checking:" in on_terminal and "/40 [" in on_terminal               # a tqdm bar, cleared at the end
    assert in_log == ""                                        # nothing but results when piped


def test_a_closed_stdout_stops_quietly_and_keeps_the_score(an4_test_utts, tmp_path):
    """`asr score ... | head -1`: the reader leaves early. No traceback, and the score files and the
    RESULTS line are written before anything is printed, so they survive."""
    utts = an4_test_utts[:5]
    manifest, hyp_dir = tmp_path / "m.jsonl", tmp_path / "exp" / "decode_test"
    write_manifest(manifest, utts)
    hyp_dir.mkdir(parents=True)
    (hyp_dir / "hyp.txt").write_text("".join(f"{u.id}\t{u.text}\n" for u in utts))
    results = tmp_path / "RESULTS.md"
    read_end, write_end = os.pipe()
    os.close(read_end)                      # nobody will read: the first write fails with EPIPE
    proc = subprocess.run([sys.executable, "-m", "asr.cli", "score", "--manifest", str(manifest),
                           "--hyp", str(hyp_dir / "hyp.txt"), "--results", str(results)],
                          stdout=write_end, stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert "%WER 0.00" in (hyp_dir / "wer.txt").read_text()
    assert "| 0.00 |" in results.read_text()
