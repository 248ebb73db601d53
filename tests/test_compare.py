"""`cxrnb compare`: two runs' verdicts compared by their words, their FDs by the settling rule."""

from __future__ import annotations

import pytest

from cxrnb import cli
from cxrnb.report.compare import compare, mask, render

RESULTS = """# Measured sample quality

## Scores

| model | FD ↓ |
|---|---|
| GAN | {gan} |

## Does the paper's ranking hold?

- FD (cxr-classifier): GAN vs VAE-beta0.002: {verdict} ({gan} vs 674 ± 24); GMVAE-V8 at σ=1 px: worse.

## Provenance

- data: real CXR14 subset · 1,657 images · fp32 on {machine}
"""

HEADER = "model,kind,space,dim,eff_dim,metric,mean,std,note,n_real,n_generated,n_repeats,n_seeds\n"


def _reports(tmp_path, name, gan="120 ± 16", verdict="holds", machine="AMD EPYC", rung=(100.0, 3.0)):
    d = tmp_path / name
    (d / "figures" / "07_evaluation").mkdir(parents=True)
    (d / "results.md").write_text(RESULTS.format(gan=gan, verdict=verdict, machine=machine))
    (d / "figures" / "07_evaluation" / "metrics_pooled.csv").write_text(
        HEADER + f"ladder: blur σ=1 px,ladder,cxr-classifier,256,9.8,FD,{rung[0]},{rung[1]},,82,82,5,\n"
        "ladder: blur σ=1 px,ladder,cxr-classifier,256,9.8,KID,9.0,1.0,,82,82,5,\n"
        "GAN,model,cxr-classifier,256,9.8,FD,120.0,16.0,,82,82,5,3\n")
    return d


def test_mask_hides_numbers_but_not_names():
    assert mask("prior 1978 ± 923, GMM sampler 477 ± 61") == "prior #, GMM sampler #"
    assert mask("Adding 1,326 images changes AUROC by -0.018 ± 0.024:") == "Adding # images changes AUROC by #:"
    assert mask("FD 6.28 ± 0.16 × 10⁻⁶ (2.93×)") == "FD # (#×)"
    names = "VAE-beta0.002, GMVAE-V8, blur σ=1 px, muhammedtalo/COVID-19"
    assert mask(names) == names


def test_numbers_that_move_with_the_same_words_agree(tmp_path):
    a = _reports(tmp_path, "a")
    b = _reports(tmp_path, "b", gan="131 ± 19", machine="Intel Xeon", rung=(110.0, 4.0))
    c = compare(a, b)
    assert c.differing == [] and c.n_clauses == (2, 2) and c.n_same == 2   # provenance (the machine) not compared
    (rung,) = [v for v in c.values if v.kind == "ladder"]        # FD only, not KID
    assert (rung.gap, rung.spread) == (10.0, 5.0)                # |110 - 100| <= 2 * sqrt(3² + 4²)
    assert rung.agrees and c.agrees
    text = render(c)
    assert "Agreeing: ladder rungs 1 of 1; models pooling 3 or more training seeds 1 of 1" in text
    assert "The runs agree." in text


def test_a_changed_verdict_or_a_moved_rung_is_reported(tmp_path):
    a = _reports(tmp_path, "a")
    b = _reports(tmp_path, "b", verdict="not resolved within spread", rung=(111.0, 4.0))
    c = compare(a, b)
    ((da, db),) = c.differing
    assert [x.section for x in da + db] == ["## Does the paper's ranking hold?"] * 2
    assert "holds" in da[0].text and "not resolved" in db[0].text
    assert len(da) == 1                          # only the clause that changed, not the whole line
    (rung,) = [v for v in c.values if v.kind == "ladder"]
    assert not rung.agrees                       # 11 > 2 * 5
    text = render(c)
    assert "| **no** |" in text and "The runs differ" in text


def test_sentences_indexed_by_measured_seconds_are_listed_but_do_not_decide(tmp_path):
    a, b = _reports(tmp_path, "a"), _reports(tmp_path, "b")
    timed = "\n## Quality against training compute\n\n- Within {s} s of training: {m} leads.\n\n## Provenance"
    for d, s, m in ((a, 626, "LSGAN-DiffAug-EMA"), (b, 337, "LSGAN")):
        (d / "results.md").write_text((d / "results.md").read_text().replace("\n## Provenance", timed.format(s=s, m=m)))
    c = compare(a, b)
    assert len(c.differing) == 1 and c.verdicts_differing == [] and c.agrees
    assert "(indexed by measured seconds" in render(c)


def test_cli_exit_status_says_whether_the_runs_agree(tmp_path, capsys):
    a, same, other = (_reports(tmp_path, "a"), _reports(tmp_path, "b", gan="118 ± 15"),
                      _reports(tmp_path, "c", verdict="reversed"))
    with pytest.raises(SystemExit) as e:
        cli.main(["compare", str(a), str(same)])
    assert e.value.code == 0
    with pytest.raises(SystemExit) as e:
        cli.main(["compare", str(a), str(other)])
    assert e.value.code == 1 and "reversed" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["compare", str(a), str(tmp_path / "missing")])
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith("cxrnb compare: error:")
