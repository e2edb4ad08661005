"""`pip install .` alone (no make): the wheel holds the whole package, `asr` runs, and a stage that needs
KenLM's lmplz and cannot find it says how to get it."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_alone_gives_a_working_asr(tmp_path):
    import shutil

    source = tmp_path / "src"                                     # a copy: building leaves build/ in the tree
    shutil.copytree(ROOT / "asr", source / "asr", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("asr-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "asr").rglob("*") if p.suffix in (".py", ".html", ".cpp")}
    assert modules <= names, sorted(modules - names)                # every module ships, the server's page too
    assert {"asr/serve/page.html", "asr/rnn_loop.cpp"} <= names    # ... and the recurrent loops' source
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    # a Python of its own, outside this checkout's .venv (where make install put lmplz), its dependencies
    # taken from the .venv's site-packages
    import sysconfig

    (tmp_path / "bin").mkdir()
    python = tmp_path / "bin" / "python"
    python.symlink_to(os.path.realpath(sys.executable))
    env = {**os.environ, "PYTHONPATH": f"{target}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/bin:/bin"}
    env.pop("LMPLZ", None)
    script = ("import asr, sys; from asr.cli import main; print(asr.__file__); main(sys.argv[1:])")
    where = subprocess.run([str(python), "-c", "import asr; print(asr.__file__)"], capture_output=True,
                           text=True, env=env, cwd=tmp_path)
    assert where.stdout.startswith(str(target)), where.stdout + where.stderr     # the installed copy, not the checkout
    helped = subprocess.run([str(python), "-c", script, "--help"], capture_output=True, text=True, env=env,
                            cwd=tmp_path)
    assert helped.returncode == 0 and "transcribe" in helped.stdout
    loops = subprocess.run([str(python), "-c", "import asr.native as r; print(*r._SOURCES, r.compiled_loop(), "
                            "r.compiled_spectrum())"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert loops.stdout.startswith(str(target)) and "asr_rnn_loop" in loops.stdout, loops.stdout + loops.stderr
    assert "asr_spectrum" in loops.stdout, loops.stdout + loops.stderr                # both sources installed
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "a", "audio": "a.wav", "duration": 1.0, "text": "YES"}\n')
    lm = subprocess.run([str(python), "-c", script, "lm", "--manifest", str(manifest), "--out", str(tmp_path / "lm")],
                        capture_output=True, text=True, env={**env, "PATH": str(tmp_path)}, cwd=tmp_path)
    assert lm.returncode != 0
    assert "lmplz (KenLM's LM estimator) not found" in lm.stderr and "https://github.com/kpu/kenlm" in lm.stderr
    assert "Traceback" not in lm.stderr
    assert_serves_its_page(python, script, env, tmp_path)


def assert_serves_its_page(python: Path, script: str, env: dict, cwd: Path) -> None:
    """`asr serve` from the installed copy answers GET / with the page the wheel carries."""
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = ROOT / "tests" / "fixtures" / "an4_cpu_2x160.pt"
    server = subprocess.Popen([str(python), "-c", script, "serve", "--model", str(model), "--port", str(port)],
                              env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, page = time.monotonic() + 120, None
        while page is None:
            assert server.poll() is None, server.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "asr serve did not answer within 120 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as reply:
                    page = reply.read().decode()
            except OSError:
                time.sleep(0.3)
        assert "/v1/audio/transcriptions" in page and "/v1/audio/stream" in page
    finally:
        server.terminate()
        server.wait(30)
