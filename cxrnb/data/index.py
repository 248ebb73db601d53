"""The CXR14 index: one DataFrame row per image, with its multi-hot labels, patient and file path.

Reads the official release layout unchanged: ``Data_Entry_2017.csv`` (or the v2020 table) beside
``images/`` and/or the archives' ``images_001/images/`` ... ``images_012/images/`` folders, full or
partial. The phantom (``cxrnb.data.phantom``) writes the same layout, so everything downstream is
indifferent to where the pixels came from; ``data_source`` says which it was.
"""

from __future__ import annotations

import importlib.util
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrnb.data.phantom import write_phantom
from cxrnb.errors import CxrnbError
from cxrnb.labels import LABELS
from cxrnb.paths import PHANTOM_DIR, in_repo

FULL_SIZE = 112_120                     # images in the complete release
TABLE_NAMES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
# Official column -> our name. The rest (original size, pixel spacing) is not needed.
COLUMNS = {"Image Index": "image", "Finding Labels": "labels", "Follow-up #": "follow_up",
           "Patient ID": "patient", "Patient Age": "age", "Patient Gender": "sex",
           "View Position": "view"}
PHANTOM_MARKER = "PHANTOM"              # file the phantom writer leaves in its root
IMAGE_SUFFIXES = frozenset(Image.registered_extensions())     # every format PIL can open
CXR14_NAME = re.compile(r"\d{8}_\d{3}\.png")                 # patient_followup.png, as NIH names them


def resolve_root(root: str | Path | None) -> Path:
    """The CXR14 folder to read: ``root``, else $CXR14_ROOT; ``"phantom"`` means data/phantom in
    the checkout, written on first use (512 images, 256 px, seed 0)."""
    if root is None:
        root = os.environ.get("CXR14_ROOT")
        if root is not None and not root.strip():       # Path("") would be the working directory
            raise CxrnbError("CXR14_ROOT is set but empty: export CXR14_ROOT=/path/to/cxr14, unset it, "
                             "or pass --root (`cxrnb phantom` writes a stand-in)")
    if root is None:
        raise CxrnbError("no CXR14 folder given: set CXR14_ROOT or pass --root "
                         "(`cxrnb download` fetches CXR14, `cxrnb phantom` writes a stand-in)")
    if not str(root).strip():
        raise CxrnbError("the CXR14 folder given is an empty string: pass the folder's path, "
                         "'phantom', or None to read $CXR14_ROOT")
    if str(root) == "phantom":
        path = in_repo(PHANTOM_DIR)
        if not (path / PHANTOM_MARKER).is_file():
            write_phantom(path, n=512, size=256, seed=0)
        return path
    path = Path(root).expanduser()
    if not path.is_dir():
        raise CxrnbError(f"CXR14 folder {path} does not exist: set CXR14_ROOT or pass --root "
                         "(`cxrnb download` fetches CXR14, `cxrnb phantom` writes a stand-in)")
    return path


def packaged_table() -> Path:
    """The complete official label table that ships inside torchxrayvision (no network needed)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise CxrnbError("no label table given and torchxrayvision is not installed: "
                         "pass the path of Data_Entry_2017.csv")
    path = Path(spec.submodule_search_locations[0]) / "data" / "Data_Entry_2017_v2020.csv.gz"
    if not path.is_file():
        raise CxrnbError(f"torchxrayvision has no {path.name}: "
                         "pass the path of Data_Entry_2017.csv")
    return path


def find_label_table(root: str | Path) -> Path:
    """The official label table inside ``root`` (plain or gzipped, 2017 or v2020 name)."""
    root = Path(root)
    for name in TABLE_NAMES:
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise CxrnbError(f"no Data_Entry_2017.csv in {root}: put the official label table there "
                     "or pass --csv")


def _read_csv(path: Path) -> pd.DataFrame:
    """UTF-8, else Windows-1252 (what Excel saves) with a warning; an empty file is one clear error."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise CxrnbError(f"label table {path} is empty: use the official Data_Entry_2017.csv") from None
    except UnicodeDecodeError:
        warnings.warn(f"{path} is not UTF-8; read it as Windows-1252 (how Excel saves CSV): "
                      "save it as UTF-8 to silence this", stacklevel=3)
        return pd.read_csv(path, encoding="cp1252")


def parse_age(ages: pd.Series) -> pd.Series:
    """Ages in years: numbers as they are, and the original 2017 table's strings such as "057Y",
    "010M" or "020D" (years, months, days); anything else is an error naming the first such rows."""
    if pd.api.types.is_numeric_dtype(ages):
        return ages.astype(float)
    text = ages.astype(str).str.strip().str.upper()
    parts = text.str.extract(r"^(\d+(?:\.\d+)?)([YMD]?)$")
    bad = parts[0].isna()
    if bad.any():
        rows = ", ".join(f"row {i + 2} ({ages[i]!r})" for i in ages.index[bad][:3])
        raise CxrnbError(f"Patient Age not understood at {rows}: use years, or the 2017 form like 057Y")
    per_year = parts[1].map({"": 1.0, "Y": 1.0, "M": 12.0, "D": 365.25})
    return parts[0].astype(float) / per_year


def _first_rows(df: pd.DataFrame, hot: pd.DataFrame, unknown: list[str]) -> str:
    """The first rows holding a label outside LABELS, with the image and what was meant, if a case
    or spacing slip ("pneumonia", " Mass")."""
    spelled = {label.lower().replace(" ", "_"): label for label in LABELS}
    bad = hot[unknown].any(axis=1)
    parts = []
    for i in df.index[bad][:3]:
        label = next(u for u in unknown if hot.at[i, u])
        meant = spelled.get(label.strip().lower().replace(" ", "_"))
        parts.append(f"{label!r} at row {i + 2} ({df.image[i]})" + (f", meant {meant!r}?" if meant else ""))
    more = int(bad.sum()) - len(parts)
    return "; ".join(parts) + (f" and {more} more row(s)" if more > 0 else "")


def read_labels(csv: str | Path | None = None) -> pd.DataFrame:
    """The label table, normalised: image, labels (raw "Finding Labels"), follow_up, patient, age
    (years), sex, view, then one uint8 column per name in LABELS. ``csv=None`` reads the full packaged
    table, so label statistics work without a single image. Refused, naming the rows: an image listed
    twice, an empty "Finding Labels" cell (the official table writes "No Finding")."""
    path = Path(csv) if csv is not None else packaged_table()
    if not path.is_file():
        raise CxrnbError(f"label table {path} does not exist: pass the path of Data_Entry_2017.csv")
    raw = _read_csv(path)
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        raise CxrnbError(f"{path} lacks the CXR14 columns {missing}: is it Data_Entry_2017.csv?")
    df = raw[list(COLUMNS)].rename(columns=COLUMNS)
    twice = df["image"].duplicated(keep=False)
    if twice.any():
        rows = ", ".join(f"{df.image[i]} (row {i + 2})" for i in df.index[twice][:4])
        raise CxrnbError(f"{path} lists {df.image[twice].nunique()} image(s) more than once: {rows}; "
                         "keep one row per image")
    empty = df["labels"].isna() | (df["labels"].astype(str).str.strip() == "")
    if empty.any():
        rows = ", ".join(f"{df.image[i]} (row {i + 2})" for i in df.index[empty][:4])
        raise CxrnbError(f"{path} has {int(empty.sum())} empty Finding Labels cell(s): {rows}; "
                         "write 'No Finding' for an image without findings")
    df["age"] = parse_age(df["age"])
    hot = df["labels"].str.get_dummies(sep="|")
    unknown = sorted(set(hot.columns) - set(LABELS))
    if unknown:
        raise CxrnbError(f"{path} has labels outside the CXR14 vocabulary: {_first_rows(df, hot, unknown)}; "
                         f"expected {list(LABELS)}")
    hot = hot.reindex(columns=list(LABELS), fill_value=0).astype(np.uint8)
    return pd.concat([df, hot], axis=1)


def locate_images(root: str | Path) -> dict[str, Path]:
    """File name -> path for every image in ``root/images/`` and ``root/images_NNN/images/``: any
    format PIL decodes (.png, .jpg, .jpeg, .jfif, .tif …), extension in any case."""
    root = Path(root)
    folders = [root / "images"]
    with os.scandir(root) as it:
        folders += sorted(Path(e.path) / "images" for e in it
                          if e.is_dir() and e.name.startswith("images_"))
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as it:
            for entry in it:
                if (not entry.name.startswith(".") and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES
                        and entry.name not in found):
                    found[entry.name] = Path(entry.path)
    return found


def load_index(root: str | Path | None = None, csv: str | Path | None = None,
               on_missing: str = "skip") -> pd.DataFrame:
    """The label table joined with image paths (column ``path``), in table order.

    Rows whose image is absent (a partial download, the subset) are counted and then dropped with
    a warning (``on_missing="skip"``) or refused (``"error"``).
    """
    if on_missing not in ("skip", "error"):
        raise CxrnbError(f"on_missing must be 'skip' or 'error', not {on_missing!r}")
    root = resolve_root(root)
    df = read_labels(csv if csv is not None else find_label_table(root))
    paths = locate_images(root)
    if not paths:
        raise CxrnbError(f"no images in {root}/images or {root}/images_NNN/images: "
                         "point --root at a CXR14 folder or run `cxrnb download`")
    by_name = {name.lower(): path for name, path in reversed(list(paths.items()))}   # X.PNG = x.png
    df["path"] = df["image"].str.lower().map(by_name)
    absent = int(df["path"].isna().sum())
    if absent:
        first = ", ".join(df.image[df.path.isna()][:3])
        msg = f"{absent:,} of {len(df):,} images in the label table are absent from {root} (e.g. {first})"
        if on_missing == "error":
            raise CxrnbError(f"{msg}: finish the download or use --on-missing skip")
        warnings.warn(f"{msg}; skipped", stacklevel=2)
        df = df[df["path"].notna()]
    if df.empty:
        raise CxrnbError(f"none of the images in {root} is in the label table: wrong --csv?")
    return df.reset_index(drop=True)


def split_by_patient(df: pd.DataFrame, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                     seed: int = 0) -> pd.DataFrame:
    """Add a ``split`` column (train/val/test) so that all images of a patient share one split.

    Patients are shuffled (seeded) and dealt out in order until each split holds about its fraction
    of the *images*; a patient goes where its first image falls, so no split overshoots by more
    than one patient's images.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise CxrnbError(f"split fractions must be three non-negative numbers summing to 1, "
                         f"not {fractions}")
    counts = df["patient"].value_counts().sort_index()
    order = np.random.default_rng(seed).permutation(len(counts))
    sizes = counts.to_numpy()[order]
    first = (np.cumsum(sizes) - sizes) / sizes.sum()          # image fraction before each patient
    which = np.searchsorted(np.cumsum(fractions)[:-1], first, side="right")
    split_of = pd.Series(np.array(["train", "val", "test"])[which], index=counts.index[order])
    return df.assign(split=df["patient"].map(split_of).to_numpy())


def label_matrix(df: pd.DataFrame) -> np.ndarray:
    """The (N, 15) float32 multi-hot matrix in LABELS order (a writable copy, torch-ready)."""
    return np.array(df[list(LABELS)], dtype=np.float32)


def data_source(root: str | Path, n_images: int | None = None) -> str:
    """Which data a folder holds, for every footer: the phantom (marker file), CXR14 (its file
    names, "00000001_000.png", complete: "full CXR14", else "real CXR14 subset"), or any other
    images ("images from <folder>"), so other chest X-rays are never stamped as CXR14.
    ``n_images`` saves re-listing a CXR14 folder's size."""
    root = Path(root)
    if (root / PHANTOM_MARKER).is_file():
        return "synthetic phantom"
    names = locate_images(root)
    if not names or not all(CXR14_NAME.fullmatch(n) for n in names):
        return f"images from {root.name or root}"
    n_images = len(names) if n_images is None else n_images
    return "full CXR14" if n_images >= FULL_SIZE else "real CXR14 subset"


def read_image_sources(root: str | Path) -> pd.Series | None:
    """Each image's source repository (``Image Index`` -> ``source repository``) from
    ``root/provenance.csv``; None when the folder has no such file."""
    path = Path(root) / "provenance.csv"
    if not path.is_file():
        return None
    df = _read_csv(path)
    missing = {"Image Index", "source repository"} - set(df.columns)
    if missing:
        raise CxrnbError(f"{path} lacks the column(s) {', '.join(sorted(missing))}")
    return df.set_index("Image Index")["source repository"]


def read_sources(root: str | Path) -> pd.Series | None:
    """Images per source repository (``read_image_sources``), largest first; None without a
    provenance.csv."""
    sources = read_image_sources(root)
    return None if sources is None else sources.value_counts()
