"""`cxrnb compare`: two runs' verdicts compared by their words, their FDs by the settling rule."""

from __future__ import annotations

import pytest

from cxrnb import cli
from cxrnb.errors import CxrnbError
from cxrnb.report.compare import Comparison, Value, compare, items_only_in, margins, mask, render

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
    assert c.differing == [] and c.n_clauses == (5, 5) and c.n_same == 5   # table, 2 clauses; not provenance
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


def test_mask_hides_scientific_notation():
    assert mask("gap -554 against a seed spread of 1.53e+03 (3 seeds)") == "gap # against a seed spread of # (# seeds)"


def test_a_row_in_one_run_only_is_a_difference(tmp_path):
    a, b = _reports(tmp_path, "a"), _reports(tmp_path, "b")
    csv = b / "figures" / "07_evaluation" / "metrics_pooled.csv"
    csv.write_text(csv.read_text() + "DDPM,model,cxr-classifier,256,9.8,FD,4197.0,43.0,,82,82,5,1\n")
    c = compare(a, b)
    assert c.differing == [] and all(v.agrees for v in c.values)
    assert c.only_in == [("cxr-classifier", "DDPM", "B")] and not c.agrees
    assert "cxr-classifier DDPM (only in B)" in render(c)


def test_a_verdict_after_a_timed_section_is_judged_in_its_own_section(tmp_path):
    """One difflib block over the whole file could span the timed section and the next one, and be
    let off as 'timed'; diffing section by section keeps the target's change a verdict."""
    a, b = _reports(tmp_path, "a"), _reports(tmp_path, "b")
    tail = ("\n## Quality against training compute\n\n- Within {s} s of training: {m} leads.\n\n"
            "## The study's quality targets\n\n- Best GAN below blur σ=1 px: {t}.\n\n## Provenance")
    for d, s, m, t in ((a, 626, "GAN", "met"), (b, 337, "VAE", "missed by a factor 2.3")):
        text = (d / "results.md").read_text()
        (d / "results.md").write_text(text.replace("\n## Provenance", tail.format(s=s, m=m, t=t)))
    c = compare(a, b)
    assert [(x[0][0].section) for x in c.differing] == ["## Quality against training compute",
                                                        "## The study's quality targets"]
    ((da, db),) = c.verdicts_differing
    assert "met" in da[0].text and "missed" in db[0].text and not c.agrees


def test_table_rows_are_compared_by_their_words(tmp_path):
    a, b = _reports(tmp_path, "a"), _reports(tmp_path, "b")
    row = "\n| real+synthetic | GAN | 0.698 ± 0.033 | {change} |\n"
    for d, change in ((a, "-0.018 ± 0.024: no measurable effect"), (b, "-0.041 ± 0.012: it hurts")):
        text = (d / "results.md").read_text()
        (d / "results.md").write_text(text.replace("| GAN | {} |\n".format("120 ± 16"),
                                                   "| GAN | 120 ± 16 |\n" + row.format(change=change)))
    c = compare(a, b)
    ((da, db),) = c.verdicts_differing
    assert "no measurable effect" in da[0].text and "it hurts" in db[0].text
    assert c.n_clauses == (6, 6)     # the table (header, separator, two rows) and two clauses


def test_a_row_without_a_spread_agrees_only_up_to_round_off(tmp_path):
    a = _reports(tmp_path, "a", rung=(100.0, float("nan")))
    same = _reports(tmp_path, "b", rung=(100.00001, float("nan")))
    moved = _reports(tmp_path, "c", rung=(100.1, float("nan")))
    (rung,) = [v for v in compare(a, same).values if v.kind == "ladder"]
    assert rung.spread == 0 and rung.agrees                      # 1e-7 of itself: round-off
    (rung,) = [v for v in compare(a, moved).values if v.kind == "ladder"]
    assert not rung.agrees
    assert "largest relative gap 0.001 (cxr-classifier, ladder: blur σ=1 px)" in render(compare(a, moved))


def test_a_list_that_lost_an_item_names_it():
    a = "Settled: GAN < VAE, GAN < DDPM, VAE < DDPM."
    b = "Settled: GAN < VAE, VAE < DDPM."
    assert items_only_in(a, b) == (["GAN < DDPM"], [])
    assert items_only_in("prior 12 ± 3", "no sign") == ([], [])     # different sentences, not one list


def test_a_one_seed_models_placement_is_listed_but_does_not_decide(tmp_path):
    """results.md settles nothing on a model of one training seed, so where a rerun places it on the
    ladder is a reading: listed, not deciding; a placement of a model of three seeds decides."""
    runs = []
    for name, vae_rung, gan_rung in (("a", "blur σ=2 px", "flipped"), ("b", "noise σ=0.1", "flipped"),
                                     ("c", "blur σ=2 px", "blur σ=1 px")):
        d = _reports(tmp_path, name)
        section = (f"\n## Where the models sit on the calibration ladder\n\n- FD (cxr-classifier): "
                   f"VAE-beta0.002 · GMM sampler 674 ± 24: between {vae_rung} and x; "
                   f"GAN 120 ± 16: between {gan_rung} and y."
                   "\n\n## Provenance")
        (d / "results.md").write_text((d / "results.md").read_text().replace("\n## Provenance", section))
        csv = d / "figures" / "07_evaluation" / "metrics_pooled.csv"
        csv.write_text(csv.read_text()                  # the one-seed sampler's name begins with a 3-seed model's
                       + "VAE-beta0.002 · GMM sampler,model,cxr-classifier,256,9.8,FD,674.0,24.0,,82,82,5,1\n"
                       + "VAE-beta0.002,model,cxr-classifier,256,9.8,FD,600.0,24.0,,82,82,5,3\n")
        runs.append(d)
    one_seed = compare(runs[0], runs[1])
    ((da, db),) = one_seed.differing
    assert "blur σ=2 px" in da[0].text and one_seed.verdicts_differing == [] and one_seed.agrees
    assert "(a placement of a model of fewer than 3 training seeds" in render(one_seed)
    three_seeds = compare(runs[0], runs[2])
    assert len(three_seeds.verdicts_differing) == 1 and not three_seeds.agrees


def test_sections_are_paths_of_headings_with_numbers_masked(tmp_path):
    """A heading's number may move ('effective dimension 9.8'); a subsection of the timed section is
    timed; two subsections of one name under different sections are not one."""
    a, b = _reports(tmp_path, "a"), _reports(tmp_path, "b")
    body = ("\n### Feature space `x`: effective dimension {dim}\n\n- x: same.\n"
            "\n## Quality against training compute\n\n### Curves\n\n- Within {s} s: {m} leads.\n"
            "\n## Targets\n\n### Curves\n\n- GAN target: {t}.\n\n## Provenance")
    for d, dim, s, m, t in ((a, 9.8, 626, "GAN", "met"), (b, 9.9, 337, "VAE", "missed")):
        text = (d / "results.md").read_text()
        (d / "results.md").write_text(text.replace("\n## Provenance", body.format(dim=dim, s=s, m=m, t=t)))
    c = compare(a, b)
    assert [blk[0][0].section for blk in c.differing] == ["## Quality against training compute › ### Curves",
                                                          "## Targets › ### Curves"]
    ((da, db),) = c.verdicts_differing
    assert "met" in da[0].text and "missed" in db[0].text


def test_a_metrics_table_with_a_row_twice_is_an_error(tmp_path):
    a, b = _reports(tmp_path, "a"), _reports(tmp_path, "b")
    csv = b / "figures" / "07_evaluation" / "metrics_pooled.csv"
    csv.write_text(csv.read_text() + "GAN,model,cxr-classifier,256,9.8,FD,121.0,16.0,,82,82,5,3\n")
    with pytest.raises(CxrnbError, match="appears twice .cxr-classifier GAN."):
        compare(a, b)
    csv.write_text("")
    with pytest.raises(CxrnbError, match="is empty"):
        compare(a, b)


def test_a_sentence_with_a_comma_is_not_a_list():
    assert items_only_in("GAN leads, then VAE", "GAN leads, then DDPM") == ([], [])


def test_a_pair_one_run_settled_shows_its_gap_against_the_threshold_in_both():
    """'X < Y' settled in A only: the gap over twice the combined spread, per run (by hand:
    (120 - 100) / (2 * hypot(3, 4)) = 2.0 in A, (108 - 100) / 10 = 0.8 in B)."""
    x = Value("cxr-classifier", "X", "model", a=(100.0, 3.0), b=(100.0, 3.0), seeds=3)
    y = Value("cxr-classifier", "Y", "model", a=(120.0, 4.0), b=(108.0, 4.0), seeds=3)
    c = Comparison(runs=("a", "b"), n_clauses=(1, 1), values=[x, y])
    assert margins(c, "X < Y") == "X < Y: gap ÷ settling threshold, cxr-classifier: 2.00× in A, 0.80× in B"
    assert margins(c, "X < Z") == "" and margins(c, "X and Y") == ""
