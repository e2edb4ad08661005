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
