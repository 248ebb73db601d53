"""`cxrnb reproduce` under a batch scheduler: SIGTERM to the runner reaches the kernel's training
loop (a checkpoint, then a clean stop) and the same command resumes; one writer per reports folder.

Each test runs the real CLI in a subprocess and signals that process, as SLURM or a cloud
pre-emption would; they wait for files to appear rather than sleeping blindly.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch

from tests.test_run import write_notebook

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    """`python -m cxrnb reproduce ARGS` in its own process group, one CPU thread (the box is shared)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "cxrnb", "reproduce", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until ``path`` exists; fails early, with the runner's output, if the runner ends first."""
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the runner ended (rc {proc.returncode}) before {path} appeared:\n{err[-3000:]}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.1)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 90) -> tuple[int, str]:
    """Send ``sig`` to the runner (only to it: not its group) and return its exit code and stderr."""
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the runner did not stop within {timeout} s of {signal.Signals(sig).name}")
    return proc.returncode, err


def last_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    return err.strip().splitlines()[-1]


def step_of(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["step"]


def test_sigterm_to_the_runner_checkpoints_the_training_notebook_and_the_same_command_resumes(
        tmp_path, phantom_root):
    reports, runs = tmp_path / "reports", tmp_path / "runs"
    # Long enough to be training when the signal comes; a grid every iteration shows how far it got.
    command = ["--profile", "smoke", "--only", "04", "--reports", str(reports), "--set", f"runs_dir={runs}",
               "--set", f"data_root={phantom_root}", "--set", "batch_size=8", "--set", "04.epochs=50",
               "--set", "04.conditional=[]", "--set", "04.recipe=false", "--set", f"04.sample_at={list(range(300))}"]
    out = runs / "LSGAN-64px"

    first = start(command, cwd=tmp_path)                          # not the checkout: found anyway
    wait_for(out / "samples" / "iter_000002.png", first)          # two iterations trained
    rc, err = stop(first)
    message = last_line(err)
    assert rc != 0 and message.startswith("cxrnb reproduce: interrupted: SIGTERM: passed to notebook 04_lsgan")
    assert "checkpoint written to" in message and "run the same command again to resume" in message
    assert "| 04_lsgan | interrupted by SIGTERM |" in (reports / "index.md").read_text()
    assert not any((reports / ".staging").iterdir()) and not (reports / "figures" / "04_lsgan").exists()
    step = step_of(out / "checkpoint.pt")
    assert step >= 2 and f"at iteration {step} of" in message
    first_grid = (out / "samples" / "iter_000001.png").stat().st_mtime_ns

    again = start(command, cwd=tmp_path)                          # the same command
    wait_for(out / "samples" / f"iter_{step + 1:06d}.png", again)   # trained the iteration after it
    rc, err = stop(again)
    assert rc != 0 and "interrupted: SIGTERM" in last_line(err)
    assert step_of(out / "checkpoint.pt") > step
    # A fresh start would have deleted and redrawn the grids of iterations 0..step: resumed, it did not.
    assert (out / "samples" / "iter_000001.png").stat().st_mtime_ns == first_grid


def sleeper(folder: Path) -> Path:
    """Two notebooks: one that marks its start and sleeps, one that must then never run."""
    folder.mkdir()
    write_notebook(folder / "01_sleep.ipynb", "reports_dir = ''",
                   "import pathlib, time\npathlib.Path(reports_dir, 'started').write_text('yes')\ntime.sleep(120)")
    write_notebook(folder / "02_after.ipynb", "reports_dir = ''", "x = 1")
    return folder


def test_a_second_run_into_the_same_reports_exits_at_once_and_signals_stop_the_first(tmp_path):
    notebooks, reports = sleeper(tmp_path / "nb"), tmp_path / "reports"
    command = ["--profile", "smoke", "--notebooks", str(notebooks), "--reports", str(reports)]
    first = start(command, cwd=tmp_path)
    wait_for(reports / ".staging" / "01_sleep" / "figures" / "started", first)

    second = subprocess.run([sys.executable, "-m", "cxrnb", "reproduce", *command], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert second.returncode == 2
    assert last_line(second.stderr) == (f"cxrnb reproduce: error: another reproduce (pid {first.pid}) is "
                                        f"writing to {reports}: wait for it to end, or write elsewhere with "
                                        "--reports DIR")
    assert (reports / ".staging" / "01_sleep").is_dir()           # the first run's work is untouched

    rc, err = stop(first, signal.SIGHUP)                           # a closed terminal, handled the same way
    message = last_line(err)
    assert rc != 0 and message.startswith("cxrnb reproduce: interrupted: SIGHUP: passed to notebook 01_sleep")
    text = (reports / "index.md").read_text()
    assert "| 01_sleep | interrupted by SIGHUP |" in text and "| 02_after | not run |" in text
    assert not (reports / "runs" / "02_after.ipynb").exists()
    assert not any((reports / ".staging").iterdir())              # no staging, no lock left
    executed = nbformat.read(reports / "runs" / "01_sleep.ipynb", 4)
    assert any(o.get("ename") == "KeyboardInterrupt" for c in executed.cells for o in c.get("outputs", []))

    done = subprocess.run([sys.executable, "-m", "cxrnb", "reproduce", *command, "--only", "02"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]                 # the lock went with the first run


@pytest.mark.skipif(os.name != "posix", reason="Unix sockets: elsewhere the kernel keeps TCP")
def test_each_kernel_talks_over_unix_sockets_of_its_own(tmp_path, monkeypatch):
    """Over TCP a kernel starting beside another could lose a port to it between jupyter_client's
    pick and its bind ('Address already in use', seen with two test workers): each kernel gets socket
    files of its own in the temp folder (Jupyter's runtime folder where that path is too long for a
    socket, TCP where both are), none in the folder the notebook runs in, and they go when the kernel
    does."""
    import asyncio
    import shutil
    import tempfile

    from cxrnb.kernel_signals import MAX_SOCKET_DIR, Signals
    from cxrnb.reproduce import KERNEL

    monkeypatch.chdir(tmp_path)
    # a short folder of its own: tmp_path under pytest-xdist (or on macOS) can be longer than
    # MAX_SOCKET_DIR, and the kernel would then rightly take another folder
    short = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(short))
    make = lambda: Signals().client_options()["kernel_manager_class"](kernel_name=KERNEL)  # noqa: E731
    one, two = make(), make()
    assert (one.transport, two.transport) == ("ipc", "ipc") and one.ip != two.ip
    assert Path(one.ip).parent == short

    async def start_and_stop(km) -> list[bool]:
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)              # the kernel answers over them
            return [p.is_socket() for p in short.glob(Path(km.ip).name + "-*")]
        finally:
            kc.stop_channels()
            await km.shutdown_kernel()

    try:
        assert asyncio.run(start_and_stop(one)) == [True] * 5            # shell, iopub, stdin, control, hb
        assert not list(short.glob(Path(one.ip).name + "-*")) and not list(tmp_path.glob("kernel-ipc*"))
    finally:
        shutil.rmtree(short)

    too_long = tmp_path / ("x" * (MAX_SOCKET_DIR + 1))
    monkeypatch.setattr(tempfile, "tempdir", str(too_long))
    runtime = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    try:
        assert Path(make().ip).parent == runtime                            # the runtime folder instead
    finally:
        shutil.rmtree(runtime)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(too_long))
    assert make().transport == "tcp"                                        # no short folder: TCP
