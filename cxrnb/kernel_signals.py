"""Signals while `cxrnb reproduce` runs a notebook: passed on to the kernel, as an interrupt.

A batch scheduler ends a job with SIGTERM at its time limit (SLURM, a cloud pre-emption), a
terminal sends SIGINT (Ctrl-C) or SIGHUP (closed). Papermill's kernel runs in a session of its own
and never sees them; without this module the runner died, the training loop inside the kernel
wrote no checkpoint and the reports folder kept a half-made staging folder. ``Signals`` passes the
first one on as Jupyter's interrupt, which the training loop (``cxrnb.training.loop``) answers as it
does Ctrl-C: it finishes the iteration, writes a checkpoint and stops.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from jupyter_client import AsyncKernelManager
from jupyter_core.paths import jupyter_runtime_dir

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# The kernel talks to the runner over Unix sockets where there are some. Over TCP, jupyter_client
# picks five free ports and the kernel binds them a moment later; a kernel starting beside it (two
# test workers, two runs) can take one in between, and the kernel's heartbeat dies with "Address
# already in use". Socket files of unique names cannot collide, and stay on this machine.
IPC = os.name == "posix"
MAX_SOCKET_DIR = 80     # bytes of folder before '/cxrnb-<12 hex>-<port>' within a socket path's limit
SETTLE_SECONDS = 0.2    # a cell runs this long before an interrupt is sent (an idle kernel ignores one)


def _socket_prefix() -> str | None:
    """A path of its own for one kernel's five sockets (jupyter_client's default, 'kernel-ipc', is
    relative: the files would land in the folder the notebook runs in, shared by every run there).
    In the temp folder (local, and meant for such files), else Jupyter's runtime folder (HOME may be
    read-only, or on a file system without sockets); None where neither is short and writable."""
    for folder in (Path(tempfile.gettempdir()), Path(jupyter_runtime_dir())):
        if len(os.fsencode(folder)) > MAX_SOCKET_DIR:    # a Unix socket's path holds at most 107 bytes
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK | os.X_OK):
            return str(folder / f"cxrnb-{uuid.uuid4().hex[:12]}")
    return None


class Interrupted(KeyboardInterrupt):
    """A signal stopped the run; the message is the one line the CLI prints."""


class Signals:
    """SIGTERM, SIGINT or SIGHUP while ``reproduce`` runs, passed on to the notebook's kernel.

    Papermill starts the kernel in a session of its own, out of reach of a signal sent to the runner
    or its process group. So the runner remembers the first signal and interrupts the kernel as
    Jupyter does (SIGINT to its process group) once a cell has been running ``SETTLE_SECONDS``: the
    training loop finishes its iteration, checkpoints and stops, any other cell stops with
    KeyboardInterrupt, and no further cell or notebook starts. A second signal kills the kernel.
    Handlers are installed in the main thread; papermill runs in another (``in_thread``).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.kernel: AsyncKernelManager | None = None       # the running notebook's
        self.cell_since: float | None = None                 # when its running cell started
        self.passed_on = False
        self.previous: dict = {}

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            self._send(signal.SIGKILL)
            raise Interrupted(f"second {signal.Signals(signum).name}: the kernel was killed at once, without "
                              "a checkpoint; run the same command again to resume from the last one")
        self.signum = signum

    def pass_on(self) -> None:
        """Interrupt the kernel, once, if a signal came while a cell runs (called by the main thread)."""
        running = self.cell_since is not None and time.monotonic() - self.cell_since >= SETTLE_SECONDS
        if self.signum is not None and not self.passed_on and running:
            self.passed_on = self._send(signal.SIGINT)

    def _send(self, sig: int) -> bool:
        """``sig`` to the kernel's process group (its own session); False when no kernel runs."""
        process = getattr(getattr(self.kernel, "provisioner", None), "process", None)
        if process is None or process.poll() is not None:
            return False
        try:
            group = os.getpgid(process.pid)
            if group == os.getpgrp():            # not in a session of its own after all: the kernel only
                os.kill(process.pid, sig)
            else:
                os.killpg(group, sig)
        except ProcessLookupError:
            return False
        return True

    def _cell_starts(self, **_) -> None:
        if self.signum is not None:             # came before this cell: it does not start
            raise Interrupted(f"{self.name}: the notebook stopped before its next cell; run the same "
                              "command again to run it")
        self.cell_since = time.monotonic()

    def _cell_ends(self, **_) -> None:
        self.cell_since = None

    def client_options(self) -> dict:
        """What papermill's notebook client needs for this (one notebook): a kernel manager that
        tells us its kernel, and hooks that say when a cell runs."""
        signals, self.kernel, self.cell_since = self, None, None

        class Kernel(AsyncKernelManager):
            def __init__(self, **kwargs):
                prefix = _socket_prefix() if IPC and "transport" not in kwargs else None
                if prefix:                      # else TCP, jupyter_client's default
                    kwargs |= {"transport": "ipc", "ip": prefix}
                super().__init__(**kwargs)
                signals.kernel = self
        return {"kernel_manager_class": Kernel, "on_cell_execute": self._cell_starts,
                "on_cell_executed": self._cell_ends}


def in_thread(run: Callable[[], object], signals: Signals) -> None:
    """``run()`` in a worker thread while the main thread keeps the signals: in the main thread,
    papermill's event loop takes SIGINT and SIGTERM for itself and shuts the kernel down unasked."""
    failure: list[BaseException] = []

    def work() -> None:
        try:
            run()
        except BaseException as e:               # handed to the main thread
            failure.append(e)

    worker = threading.Thread(target=work, name="papermill", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
            signals.pass_on()
    except Interrupted:                          # a second signal killed the kernel: let papermill see it
        worker.join(10)
        raise
    if failure:
        raise failure[0]
