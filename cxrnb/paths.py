"""Where generated files go by default: inside the checkout, whatever the working directory.

JupyterLab runs a notebook in ``notebooks/``, papermill in the folder it was started from; anchoring
relative defaults here keeps every run's cache, phantom and checkpoints in one place.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cxrnb.errors import DiskFullError


def repo_dir() -> Path:
    """The checkout this package runs from (editable install), else the working directory."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def in_repo(path: str | Path) -> Path:
    """``path`` itself when absolute, else resolved against the checkout."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else repo_dir() / path


@contextmanager
def atomic(path: str | Path) -> Iterator[Path]:
    """The one way files are written here: yield a temporary sibling of ``path`` to write, rename it
    onto ``path`` when the block succeeds, delete it when it fails. A reader (or a resumed run) sees
    the old file or the new one, never half of one, whatever interrupts the write (Ctrl-C, a full
    disk). The temporary name keeps the suffix, which savefig, save_image and np.save read.

    A write that fails on a full disk says so in one line: torch.save reports it only as
    "unexpected pos …" inside its zip writer, which names neither the cause nor the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except Exception as e:
        if disk_full(e, path.parent):
            raise disk_full_error(path, atomic=True) from e
        raise
    finally:
        tmp.unlink(missing_ok=True)


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)   # the errors a full disk or quota raises
LOW_DISK_BYTES = 256 * 2**20    # below this a failed write is blamed on the disk, whatever the library said


def disk_full(error: BaseException, folder: Path) -> bool:
    """Did ``error`` come from a full disk? ENOSPC says so; libraries that hide it (torch's zip
    writer) leave only the free space to tell."""
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return True
    try:
        return shutil.disk_usage(folder).free < LOW_DISK_BYTES
    except OSError:
        return False


FREE_SPACE = "free some space (old runs/, data/cache/, pytest's temporary folders) and run again"


def disk_full_error(path: str | bytes | Path | None, atomic: bool = False, advice: str = FREE_SPACE
                    ) -> DiskFullError:
    """The one line for a write that failed on a full disk, whoever wrote: ``atomic`` (which keeps the
    previous file), a library's own file reaching the CLI as an OSError (``path`` None when the
    library did not name it), or a cache build (its own ``advice``)."""
    path = os.fsdecode(path) if isinstance(path, bytes) else path        # an OSError's filename may be bytes
    free = ""
    folder = Path(path).parent if path else None
    while folder is not None and not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        free = f" ({shutil.disk_usage(folder).free / 2**20:.0f} MB free)" if folder else ""
    except OSError:
        pass
    error = DiskFullError(f"no space left on the disk writing {path or 'a file'}{free}: {advice}"
                          + ("; the previous file, if any, is unchanged" if atomic else ""))
    error.filename = path            # as an OSError's, so a caller that words its own line can name the file
    return error


def write_text(path: str | Path, text: str) -> Path:
    """``path.write_text(text)``, atomically (see ``atomic``)."""
    with atomic(path) as tmp:
        tmp.write_text(text)
    return Path(path)


CACHE_DIR = "data/cache"    # preprocessed image caches (cxrnb.data.cache)
PHANTOM_DIR = "data/phantom"
RUNS_DIR = "runs"           # checkpoints, loss histories and sample grids (cxrnb.training.loop)
NOTEBOOKS_DIR = "notebooks"  # the numbered notebooks `cxrnb reproduce` runs (cxrnb.reproduce)
