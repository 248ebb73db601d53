"""reports/results.md: number formatting, the ranking verdict computed from means and spreads, and
the rendered table on constructed rows (and on real ``evaluate`` output)."""

import pandas as pd
import pytest
import torch

from cxrnb import results
from cxrnb.metrics import REAL, evaluate


def rows(fid: dict[str, tuple[float, float]], space: str = "classifier") -> pd.DataFrame:
    """evaluate-shaped rows with the given FID (mean, std) per model, plus one unavailable space."""
    out = [{"model": m, "space": space, "metric": "FID", "mean": mu, "std": sd, "note": ""}
           for m, (mu, sd) in fid.items()]
    out += [{"model": m, "space": "pixel", "metric": "MS-SSIM", "mean": 0.3, "std": 0.01, "note": ""}
            for m in fid]
    out.append({"model": "", "space": "inception-v3", "metric": "", "mean": float("nan"),
                "std": float("nan"), "note": "unavailable: weights file /x not found"})
    df = pd.DataFrame(out)
    df["n_real"], df["n_generated"], df["n_repeats"] = 200, 200, 5
    return df


@pytest.mark.parametrize("mean,std,text", [
    (12.345, 0.456, "12.35 ± 0.46"),
    (0.0012345, 0.00056, "0.00123 ± 0.00056"),
    (153.2, 12.0, "153 ± 12"),
    (0.5, float("nan"), "0.5"),
    (float("nan"), float("nan"), "–"),
])
def test_fmt(mean, std, text):
    assert results.fmt(mean, std) == text


@pytest.mark.parametrize("a,b,expected", [
    ((10, 1), (30, 2), "holds"),                          # gap 20 > 2 * sqrt(1 + 4) = 4.5
    ((30, 2), (10, 1), "reversed"),
    ((10, 1), (13, 2), "not resolved within spread"),     # gap 3 < 4.5
    ((10, float("nan")), (30, float("nan")), "not resolved within spread"),
])
def test_verdict(a, b, expected):
    assert results.verdict(*a, *b) == expected


def test_family_of_preset_names():
    assert [results.family_of(m) for m in ("LSGAN", "VAE-beta0.1", "GMVAE-V8", "FS-GMVAE-V1", "DirVAE-elbo",
                                           REAL)] == ["gan", "vae", "gmvae", "gmvae", "dirvae", None]


def test_ranking_uses_each_family_best_model():
    df = rows({"LSGAN": (50, 2), "VAE-beta1": (120, 5), "VAE-beta0.002": (90, 4),
               "GMVAE-V8": (52, 3), REAL: (5, 1)})
    (sentence,) = results.ranking_sentences(df)
    assert sentence.startswith("classifier:")
    assert "LSGAN vs VAE-beta0.002: holds" in sentence          # the best VAE, not beta1
    assert "LSGAN vs GMVAE-V8: not resolved within spread" in sentence
    reversed_ = results.ranking_sentences(rows({"LSGAN": (90, 2), "VAE": (40, 2)}))[0]
    assert "LSGAN vs VAE: reversed" in reversed_ and "no GMVAE row" in reversed_


def test_results_markdown_table(tmp_path):
    df = rows({"LSGAN": (50, 2), "VAE-beta1": (120, 5), REAL: (5, 1)})
    md = results.results_markdown(df, ["data: real CXR14 subset · 1,657 images · 64px"])
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| model"))
    assert "FID (classifier) ↓" in header and "MS-SSIM (pixel) ≈ real" in header
    body = [line for line in lines if line.startswith("| ") and line is not header]
    assert [b.split(" | ")[0] for b in body] == ["| LSGAN", "| VAE-beta1", f"| {REAL}"]
    assert "| LSGAN | 50.0 ± 2.0 | 0.300 ± 0.010 | 200 / 200 × 5 |" in md
    assert "- Feature space `inception-v3`: unavailable: weights file /x not found." in md
    assert "LSGAN vs VAE-beta1: holds" in md and "no GMVAE row to compare" in md
    assert md.rstrip().endswith("- data: real CXR14 subset · 1,657 images · 64px")

    path = results.write_results(tmp_path / "reports" / "results.md", df, ["p"])
    assert path.read_text() == results.results_markdown(df, ["p"])
    assert [p.name for p in path.parent.iterdir()] == ["results.md"]   # no temp file left


def test_usefulness_section():
    u = pd.DataFrame({"regime": ["real", "real+synthetic", "synthetic"], "finding": "macro",
                      "mean": [0.70, 0.71, 0.55], "std": [0.01, 0.02, 0.03], "n_seeds": 3,
                      "n_real": [1000, 1000, 0], "n_synthetic": [0, 500, 500], "n_test": 300})
    md = results.results_markdown(rows({"LSGAN": (50, 2)}), [], usefulness=u)
    assert "| real+synthetic | 0.710 ± 0.020 | 1000 + 500 | 3 |" in md
    assert "Adding synthetic images helps: not resolved within spread." in md
    assert "Synthetic images" not in md
    named = results.results_markdown(rows({"LSGAN": (50, 2)}), [], usefulness=u,
                                     usefulness_source="FS-GMVAE-elbo, 12.5 epochs, not collapsed")
    assert "Synthetic images: FS-GMVAE-elbo, 12.5 epochs, not collapsed.\n\n| training data |" in named


def test_renders_real_evaluate_output():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(40, 1, 32, 32, generator=g)
    df = evaluate(real, {"LSGAN": torch.rand(20, 1, 32, 32, generator=g) * 0.5,
                         "VAE": torch.rand(20, 1, 32, 32, generator=g)},
                  [], n_repeats=2, ms_ssim_pairs=10, progress=False)
    md = results.results_markdown(df, [])
    assert "| LSGAN |" in md and "| VAE |" in md and "20 / 20 × 2" in md
    assert "- no FID rows." in md
