"""Tables for reports/: a CSV for machines and a Markdown file for readers, both with provenance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxrnb.paths import write_text
from cxrnb.provenance import Provenance


def _cell(v) -> str:
    """Integers with thousands separators, other floats to 5 significant digits (the CSV keeps them all)."""
    if pd.isna(v):
        return ""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, (float, np.floating)):       # whole floats (ints in a column with gaps) as ints
        return f"{int(v):,}" if float(v).is_integer() else f"{v:.5g}"
    return str(v)


def markdown_table(df: pd.DataFrame, index: bool = False) -> str:
    """A GitHub Markdown table (pandas' ``to_markdown`` needs the optional tabulate package)."""
    df = df.reset_index() if index else df
    cells = [[_cell(v) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells]) + "\n"


def save_table(df: pd.DataFrame, path: str | Path, prov: Provenance, title: str = "",
               index: bool = False) -> Path:
    """Write ``path.csv`` and ``path.md`` (title, table, provenance line) and the JSON record."""
    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    md = (f"# {title}\n\n" if title else "") + markdown_table(df, index) + f"\n_{prov.line()}_\n"
    write_text(path.with_suffix(".csv"), df.to_csv(index=index))
    return write_markdown(md, path, prov)


def write_markdown(text: str, path: str | Path, prov: Provenance) -> Path:
    """Write ``path.md`` atomically and its provenance JSON beside it."""
    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path.with_suffix(".md"), text)
    prov.save_json(path)
    return path.with_suffix(".md")
