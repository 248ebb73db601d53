import pandas as pd

from cxrnb.provenance import Provenance
from cxrnb.report.tables import markdown_table, save_table


def test_markdown_table_by_hand():
    df = pd.DataFrame({"name": ["a", "b"], "count": [1234, 5], "x": [0.5, None]})
    assert markdown_table(df) == ("| name | count | x |\n|---|---|---|\n"
                                  "| a | 1,234 | 0.5 |\n| b | 5 |  |\n")


def test_save_table_writes_csv_md_and_provenance(tmp_path):
    df = pd.DataFrame({"label": ["Mass", "Hernia"], "n": [5782, 227]})
    prov = Provenance("full CXR14", 112120, 0)
    md = save_table(df, tmp_path / "t", prov, title="Counts")
    assert pd.read_csv(tmp_path / "t.csv").equals(df)
    text = md.read_text()
    assert text.startswith("# Counts") and "| Mass | 5,782 |" in text and prov.line() in text
    assert (tmp_path / "t.json").is_file() and not list(tmp_path.glob("*.tmp*"))


def test_markdown_rounds_floats_to_five_digits_but_the_csv_keeps_them(tmp_path):
    df = pd.DataFrame({"regime": ["real"], "auroc": [0.7206348094168368], "big": [123456.789],
                       "count": [14714688.0]})                     # a count in a column with gaps
    assert markdown_table(df).splitlines()[-1] == "| real | 0.72063 | 1.2346e+05 | 14,714,688 |"
    save_table(df, tmp_path / "t", Provenance("full CXR14", 1, 0))
    assert pd.read_csv(tmp_path / "t.csv")["auroc"].item() == 0.7206348094168368
