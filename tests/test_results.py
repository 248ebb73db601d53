"""reports/results.md: number formatting, the ranking verdict computed from means and spreads, and
the rendered table on constructed rows (and on real ``evaluate`` output)."""

import pandas as pd
import pytest
import torch

from cxrnb.evaluation.evaluate import LADDER, REAL, Kind, evaluate
from cxrnb.evaluation.label_evidence import Movement
from cxrnb.report import numbers, results, usefulness


def rows(fd: dict[str, tuple[float, float]], space: str = "cxr-classifier", n_seeds: int = 3) -> pd.DataFrame:
    """evaluate-shaped rows (pooled over ``n_seeds`` training seeds) with the given FD (mean, std)
    per model, plus one unavailable space."""
    out = [{"model": m, "space": space, "metric": "FD", "mean": mu, "std": sd, "note": ""}
           for m, (mu, sd) in fd.items()]
    out += [{"model": m, "space": "pixel", "metric": "MS-SSIM", "mean": 0.3, "std": 0.01, "note": ""}
            for m in fd]
    out.append({"model": "", "space": "inception-v3", "metric": "", "mean": float("nan"),
                "std": float("nan"), "note": "unavailable: weights file /x not found"})
    df = pd.DataFrame(out)
    df["n_real"], df["n_generated"], df["n_repeats"], df["n_seeds"] = 200, 200, 5, n_seeds
    return df


@pytest.mark.parametrize("mean,std,text", [
    (12.345, 0.456, "12.35 ± 0.46"),
    (0.0012345, 0.00056, "0.00123 ± 0.00056"),
    (153.2, 12.0, "153 ± 12"),
    (0.5, float("nan"), "0.5"),
    (float("nan"), float("nan"), "–"),
    (6.28e-6, 1.6e-7, "6.28 ± 0.16 × 10⁻⁶"),
    (-4.2e-4, float("nan"), "-4.2 × 10⁻⁴"),
    # five equal repeats of 2/41 whose std is round-off (8.5e-18): the cpu run of 63afe7a printed
    # "0.0487804878048780574 ± 0.0000000000000000085"
    (0.04878048780487806, 8.5e-18, "0.04878"),
    (0.0, 0.0, "0"),
])
def test_fmt(mean, std, text):
    assert numbers.fmt(mean, std) == text


@pytest.mark.parametrize("a,b,expected", [
    ((10, 1), (30, 2), "holds"),                          # gap 20 > 2 * sqrt(1 + 4) = 4.5
    ((30, 2), (10, 1), "reversed"),
    ((10, 1), (13, 2), "not resolved within spread"),     # gap 3 < 4.5
    ((10, float("nan")), (30, float("nan")), "not resolved within spread"),
])
def test_verdict(a, b, expected):
    assert numbers.verdict(*a, *b) == expected


def test_family_of_preset_names():
    assert [results.family_of(m) for m in ("LSGAN", "VAE-beta0.1", "GMVAE-V8", "FS-GMVAE-V1", "DirVAE-elbo",
                                           "DDPM", REAL)] == ["gan", "vae", "gmvae", "gmvae", "dirvae",
                                                              "diffusion", None]


def test_family_order_ranks_each_family_best_model_and_marks_unresolved_neighbours():
    df = rows({"LSGAN": (50, 2), "VAE-beta1": (120, 5), "VAE-elbo-beta1": (90, 4), "GMVAE-V8": (52, 3),
               "DirVAE-elbo": (200, 10), "DDPM": (20, 1), REAL: (5, 1)})
    (sentence,) = results.family_order_sentences(df)
    # 20 vs 50: gap 30 > 2 * hypot(1, 2); 50 vs 52: gap 2 < 2 * hypot(2, 3); 52 vs 90: 38 > 2 * 5
    assert sentence == ("FD (cxr-classifier), best model of each family: diffusion (DDPM 20.0 ± 1.0) < GAN "
                        "(LSGAN 50.0 ± 2.0) ≈ GMVAE (GMVAE-V8 52.0 ± 3.0) < VAE (VAE-elbo-beta1 90.0 ± 4.0) < "
                        "Dirichlet VAE (DirVAE-elbo 200 ± 10).")


def test_a_post_hoc_selection_represents_no_family():
    """A family of None (``scoring.families`` gives it to post-hoc labelled runs: a labeller's pick
    among a pool of samples) keeps the row out of the family order and the targets, however low its
    FD: the GMVAE is represented by its own best row, 90, not its selection's 30, and the GAN by
    LSGAN's 50, not its selection's 20."""
    labelled, picked = "GMVAE-elbo · labelled post hoc", "LSGAN · labelled post hoc"
    df = rows({"LSGAN": (50, 2), "GMVAE-elbo": (90, 4), labelled: (30, 2), picked: (20, 2), REAL: (5, 1)})
    families = {"LSGAN": "gan", "GMVAE-elbo": "gmvae", labelled: None, picked: None}
    (sentence,) = results.family_order_sentences(df, families)
    assert sentence == ("FD (cxr-classifier), best model of each family: GAN (LSGAN 50.0 ± 2.0) < "
                        "GMVAE (GMVAE-elbo 90.0 ± 4.0).")
    df["kind"] = Kind.MODEL
    rungs = pd.DataFrame([{"model": LADDER + name, "kind": Kind.LADDER, "space": "cxr-classifier", "metric": "FD",
                           "mean": mean, "std": 5.0}
                          for name, mean in (("16 px and back", 150.0), ("blur σ=1 px", 100.0))])
    (vae, gan) = results.targets(pd.concat([df, rungs]), "cxr-classifier", families)[:2]
    assert vae.endswith('GMVAE-elbo 90.0 ± 4.0 against "16 px and back" 150.0 ± 5.0: below it by 60; met.')
    assert 'LSGAN 50.0 ± 2.0 against "blur σ=1 px" 100.0 ± 5.0: below it by 50; met' in gan

def test_ranking_uses_each_family_best_model():
    df = rows({"LSGAN": (50, 2), "VAE-beta1": (120, 5), "VAE-beta0.002": (90, 4),
               "GMVAE-V8": (52, 3), REAL: (5, 1)})
    (sentence,) = results.ranking_sentences(df)
    assert sentence.startswith("FD (cxr-classifier):")
    assert "LSGAN vs VAE-beta0.002: holds" in sentence          # the best VAE, not beta1
    assert "LSGAN vs GMVAE-V8: not resolved within spread" in sentence
    reversed_ = results.ranking_sentences(rows({"LSGAN": (90, 2), "VAE": (40, 2)}),
                                          families={"LSGAN": "gan", "VAE": "vae"})[0]
    assert "LSGAN vs VAE: reversed" in reversed_ and "no GMVAE row" in reversed_


def test_results_markdown_table(tmp_path):
    df = rows({"LSGAN": (50, 2), "VAE-beta1": (120, 5), REAL: (5, 1)})
    md = results.results_markdown(df, ["data: real CXR14 subset · 1,657 images · 64px"])
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| model"))
    assert header == "| model | FD ↓ | n real / gen × repeats, training seeds |" and "FID ↓" not in md
    assert "### `pixel`" in md and "| model | MS-SSIM ≈ real | n real / gen × repeats, training seeds |" in md
    assert "| LSGAN | 50.0 ± 2.0 | 200 / 200 × 5, 3 seeds |" in md and "| LSGAN | 0.300 ± 0.010 |" in md
    assert "pool 3 training seeds each" in md and "3 scales" in md
    assert "Only 1 feature space scored: no ranking is stated" in md
    assert "- Feature space `inception-v3`: unavailable: weights file /x not found." in md
    assert "LSGAN vs VAE-beta1: holds" in md and "no GMVAE row to compare" in md
    assert md.rstrip().endswith("- data: real CXR14 subset · 1,657 images · 64px")

    path = results.write_results(tmp_path / "reports" / "results.md", df, ["p"])
    assert path.read_text() == results.results_markdown(df, ["p"])
    assert [p.name for p in path.parent.iterdir()] == ["results.md"]   # no temp file left


def _two_generators():
    """A usefulness table with the shared controls once and two generators, G1 whose images carry
    nothing and G2 whose images carry their labels and help, with their label evidence and scores.
    G2's paired changes carry spreads unlike the two rows' independent ones, so a sentence that used
    the independent spreads would show."""
    sets = {"real": "1,326 real", "real+synthetic": "1,326 real + 1,326 synthetic",
            "real+real (duplicated)": "1,326 real, each twice", "synthetic": "1,326 synthetic",
            "blank (mean grey + noise)": "1,326 blank, real labels"}
    nan = float("nan")
    cells = [("", "real", 0.70, 0.01, nan, nan, nan, nan),
             ("", "real+real (duplicated)", 0.71, 0.02, 0.01, 0.022, nan, nan),
             ("", "blank (mean grey + noise)", 0.52, 0.02, -0.18, 0.022, nan, nan),
             ("G1", "real+synthetic", 0.67, 0.03, -0.03, 0.032, nan, nan),
             ("G1", "synthetic", 0.55, 0.03, -0.15, 0.032, 0.03, 0.036),
             ("G2", "real+synthetic", 0.75, 0.01, 0.05, 0.005, nan, nan),
             ("G2", "synthetic", 0.62, 0.02, -0.08, 0.022, 0.10, 0.012)]
    u = pd.DataFrame([{"generator": g, "regime": r, "finding": "macro", "mean": m, "std": sd, "change": c,
                       "change_std": cs, "vs_blank": vb, "vs_blank_std": vbs}
                      for g, r, m, sd, c, cs, vb, vbs in cells])
    u = u.assign(n_seeds=3, steps=200, n_test=165)
    u["training set"] = u.regime.map(sets)
    u["n_train"] = u.regime.map(lambda r: 2652 if "+" in r or "duplicated" in r else 1326)
    ev = pd.DataFrame([{"generator": "G1", "finding": "macro", "mean": 0.53, "std": 0.02, "n_sets": 3,
                        "training runs": 1},
                       {"generator": "G2", "finding": "macro", "mean": 0.70, "std": 0.01, "n_sets": 3,
                        "training runs": 1}])
    moves = {"G1": Movement({"Mass": 0.01}, 0.1), "G2": Movement({"Mass": 0.05, "Edema": 0.05}, 0.1)}
    df = rows({"G1": (50, 2), "G2": (40, 1), REAL: (5, 1)})
    extra = [("G1", "cxr-classifier", "recall", 0.10, 0.02), ("G2", "cxr-classifier", "recall", 0.60, 0.05),
             (REAL, "cxr-classifier", "recall", 0.85, 0.02), ("G1", "pixel", "memorised", 0.0, 0.0),
             ("G2", "pixel", "memorised", 0.30, 0.05), (REAL, "pixel", "memorised", 0.05, 0.02)]
    df = pd.concat([df, pd.DataFrame([{"model": m, "space": sp, "metric": k, "mean": mu, "std": sd, "note": "",
                                       "n_seeds": 3} for m, sp, k, mu, sd in extra])], ignore_index=True)
    return df, u, ev, moves


def test_usefulness_section_for_two_generators():
    df, u, ev, moves = _two_generators()
    refs = {usefulness.HELD_OUT: 0.734, usefulness.TRAINING: 0.91}
    md = results.results_markdown(df, [], usefulness=u, evidence=ev, movements=moves,
                                  generator_descriptions={"G1": "G1, a toy", "G2": "G2, another"},
                                  label_references=refs, over_represented="Pneumonia 31% vs 1.3%.")
    assert "- G1, a toy.\n- G2, another." in md and "Pneumonia 31% vs 1.3%." in md
    # label evidence: G2's label moves the image half as much as a latent; the real images as references
    assert "| G2 | 0.050 ÷ 0.100 = 0.50 | 0.700 ± 0.010 | 40.0 ± 1.0 | 0.600 ± 0.050 | 0.300 ± 0.050 | 3 × 1 |" in md
    assert ("| real test images (held out) (reference) | – | 0.734 | 5.0 ± 1.0 | 0.850 ± 0.020 | 0.050 ± 0.020 | – |"
            in md)
    assert "| real training images (a copier's score) (reference) | – | 0.910 | – | – | – | – |" in md
    # 0.53 - 0.5 = 0.03 <= 2 x 0.02: not above chance; 0.70 - 0.5 > 2 x 0.01
    assert "G1: the ruler reads the findings its images were generated for at macro AUROC 0.530 ± 0.020, not " \
           "distinguishable from chance over 3 synthetic sets; it misses the 0.65 target" in md
    assert "G2: the ruler reads" in md and "above chance beyond twice its spread over 3 synthetic sets; it meets" in md
    # the controls appear once in the overview; each generator's regimes with their change against real
    assert sum(line.startswith("| real | (none: control) |") for line in md.splitlines()) == 1
    # the paired changes are used, not hypot of the rows' spreads: G2 +0.05 ± 0.005 (hypot would be 0.014)
    assert "| real+synthetic | G2 | 0.750 ± 0.010 | +0.050 ± 0.005: it helps |" in md
    assert "| real+synthetic | G1 | 0.670 ± 0.030 | -0.030 ± 0.032: no measurable effect |" in md
    assert "| synthetic | G2 | 0.620 ± 0.020 | +0.100 ± 0.012: above blank |" in md
    assert "| synthetic | G1 | 0.550 ± 0.030 | +0.030 ± 0.036: not distinguishable |" in md
    assert md.count("Control, the real images duplicated") == 1 and md.count("Control, blank images") == 1
    assert "(mean over 3 seeds ± the spread of one seed on one test draw, equal gradient steps)" in md
    # what each lacked, computed: G1's label evidence and diversity (0.10 < 0.85 / 2); it copies nothing
    assert ("G1 helps in no regime. Lacks: label evidence (ruler AUROC 0.530 ± 0.020 against the 0.65 target); "
            "diversity (recall 0.100 ± 0.020 against 0.850 ± 0.020 for held-out real images; lacking below half "
            "of it). Has: no copying (memorised 0 against 0.050 ± 0.020 for held-out real images).") in md
    assert "G2 helps in: real+synthetic." in md
    # the target: G2's synthetic-only beats blank by 0.10 > 2 x 0.012 (paired), and 0.70 >= 0.65
    assert "for their own labels: met by G2." in md
    assert "The blank control has" not in md                  # as many seeds as the rest: nothing to say


def test_a_blank_control_with_more_seeds_is_said_to_be_read_by_draw_only():
    df, u, ev, moves = _two_generators()
    u.loc[u.regime == "blank (mean grey + noise)", "n_seeds"] = 9
    md = results.results_markdown(df, [], usefulness=u, evidence=ev, movements=moves)
    assert ("The blank control has 9 seeds (its classifiers learn nothing, so their scores vary most between "
            "seeds): synthetic-only is read against it paired by draw only") in md
    assert "for their own labels: met by G2." in md           # 3 seeds against 9 still settle (min 3)
    assert ("| blank (mean grey + noise) | (none: control) | 0.520 ± 0.020 | – | 1,326 blank, real labels | 200 | 9 |"
            in md)


def test_post_hoc_generators_are_marked_and_the_target_is_a_parameter():
    df, u, ev, moves = _two_generators()
    md = results.results_markdown(df, [], usefulness=u, evidence=ev, movements={"G1": moves["G1"]},
                                  posthoc=["G2"], label_target=0.75)
    assert "| G2 | – (chosen, not conditioned) | 0.700 ± 0.010 |" in md
    assert "it misses the 0.75 target; its labels were chosen among its samples by a labeller" in md
    line = usefulness.usefulness_target(u, ev, 0.70, posthoc=["G2"])
    assert line.endswith("met by G2 (labelled post hoc: its labeller and the ruler learnt from the same images).")


def test_usefulness_target_missed_says_by_what():
    df, u, ev, moves = _two_generators()
    ev.loc[ev.generator == "G2", "mean"] = 0.60
    line = usefulness.usefulness_target(u, ev)
    assert line.endswith("missed (G1 synthetic-only 0.550 ± 0.030 vs blank 0.520 ± 0.020 (does not beat it), ruler "
                         "AUROC 0.530 ± 0.020; G2 synthetic-only 0.620 ± 0.020 vs blank 0.520 ± 0.020 (beats it), "
                         "ruler AUROC 0.600 ± 0.010).")


def test_synthetic_images_that_carry_their_labels_beat_the_blank_control():
    row = lambda m, s: pd.Series({"mean": m, "std": s, "n_seeds": 3})   # noqa: E731
    line = usefulness.synthetic_only_line(row(0.62, 0.02), row(0.51, 0.03), "G")
    assert line.startswith("Trained on G images alone: 0.620 ± 0.020, above the blank control (+0.110 ± 0.036)")
    assert "below the blank control" in usefulness.synthetic_only_line(row(0.30, 0.01), row(0.51, 0.01), "G")
    one_seed = usefulness.synthetic_only_line(row(0.62, float("nan")), row(0.51, float("nan")), "G")
    assert one_seed.endswith("(one seed: no spread, not judged).") and "nan" not in one_seed


def test_agreement_states_only_pairs_every_space_settles_alike():
    a = rows({"LSGAN": (10, 1), "VAE": (50, 1), "GMVAE": (20, 1)}, space="cxr-classifier")
    b = rows({"LSGAN": (10, 1), "VAE": (50, 1), "GMVAE": (5, 1)}, space="random-init")
    lines = results.agreement_lines(pd.concat([a, b]))
    assert "LSGAN < VAE, GMVAE < VAE" in lines[0] and "LSGAN < GMVAE" not in lines[0]
    assert lines[1] == "The spaces disagree on: LSGAN vs GMVAE."


def test_ladder_lines_place_models_between_rungs():
    df = rows({"LSGAN": (4, 0.1), "VAE": (200, 5), REAL: (1, 0.1)})
    ladder = pd.DataFrame({"model": ["ladder: blur σ=1 px", "ladder: blur σ=2 px"], "kind": "ladder",
                           "space": "cxr-classifier", "metric": "FD", "mean": [2.0, 7.0],
                           "std": [0.1, 0.2], "note": "", "n_real": 200, "n_generated": 200, "n_repeats": 5})
    (line,) = results.ladder_lines(pd.concat([df, ladder]))
    assert "LSGAN 4.00 ± 0.10: between blur σ=1 px (2.00 ± 0.10) and blur σ=2 px (7.00 ± 0.20)" in line
    assert "VAE 200.0 ± 5.0: worse than every rung, even blur σ=2 px" in line


def test_renders_real_evaluate_output():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(40, 1, 32, 32, generator=g)
    df = evaluate(real, {"LSGAN": torch.rand(20, 1, 32, 32, generator=g) * 0.5,
                         "VAE": torch.rand(20, 1, 32, 32, generator=g)},
                  [], n_repeats=2, ms_ssim_pairs=10, progress=False)
    md = results.results_markdown(df, [])
    assert "| LSGAN |" in md and "| VAE |" in md and "20 / 20 × 2" in md
    assert "- no FD rows." in md


def test_a_gap_is_settled_only_over_three_training_seeds():
    """The same means and spreads: settled with 3 training seeds behind both models, not with 1
    (a spread over resampled subsets of one trained model says nothing of the next seed)."""
    fd = {"LSGAN": (10, 1), "VAE-beta1": (50, 1)}
    (three,) = results.ranking_sentences(rows(fd, n_seeds=3))
    (one,) = results.ranking_sentences(rows(fd, n_seeds=1))
    assert "LSGAN vs VAE-beta1: holds" in three
    assert "LSGAN vs VAE-beta1: not resolved: 1 training seed (settling needs 3)" in one
    assert numbers.verdict(10, 1, 50, 1, seeds=2) == "not resolved: 2 training seeds (settling needs 3)"
    assert numbers.verdict(10, 1, 50, 1) == "holds"          # no seed count: the spread alone decides
    md = results.results_markdown(rows(fd, n_seeds=1), [])
    assert "| LSGAN | 10.0 ± 1.0 | 200 / 200 × 5, 1 seed |" in md
    assert "no gap involving them is called settled" in md
    assert "pool 3 training seeds each" in results.results_markdown(rows(fd, n_seeds=3), [])


def test_arithmetic_lines_set_the_fp32_bf16_gap_against_the_seed_spread():
    pooled = rows({"VAE": (50, 4), "GAN": (10, 1)})
    per_run = rows({"VAE": (50, 2), "VAE · seed 0 · bf16": (55, 2), "GAN": (10, 0.5),
                    "GAN · seed 0 · bf16": (14, 0.5)}, n_seeds=1)
    twins = {"VAE · seed 0 · bf16": "VAE", "GAN · seed 0 · bf16": "GAN"}
    words = {"VAE": "fp32", "GAN": "fp32", "VAE · seed 0 · bf16": "bf16 autocast",
             "GAN · seed 0 · bf16": "bf16 autocast"}
    vae, gan = results.arithmetic_lines(per_run, pooled, twins, words)
    # VAE: gap 5 <= 2 x 4 (its seed spread); GAN: gap 4 > 2 x 1
    assert vae.startswith("FD (cxr-classifier) VAE, one seed in fp32 and in bf16 autocast: 50.0 ± 2.0 vs "
                          "55.0 ± 2.0, gap +5 against a seed spread of 4 (3 seeds): within twice the seed spread")
    assert "gap +4 against a seed spread of 1 (3 seeds): beyond twice the seed spread" in gan


def test_pretraining_rare_findings_and_per_finding_changes():
    regimes = ["real", "real+synthetic", "synthetic, then real", "real+synthetic (rare findings)"]
    sets = ["100 real", "100 real + 100 synthetic", "100 synthetic, then 100 real",
            "100 real + 40 synthetic (rare findings)"]
    rows_ = []
    for regime, macro, eff in zip(regimes, [0.70, 0.69, 0.78, 0.71], [0.80, 0.80, 0.90, 0.60]):
        rows_ += [{"regime": regime, "finding": "macro", "mean": macro, "std": 0.01, "test_positives": None},
                  {"regime": regime, "finding": "Effusion", "mean": eff, "std": 0.02, "test_positives": 12},
                  {"regime": regime, "finding": "Hernia", "mean": 0.5, "std": 0.1, "test_positives": 2}]
    u = pd.DataFrame(rows_).assign(n_seeds=3, steps=50, n_test=300)
    u["training set"] = u.regime.map(dict(zip(regimes, sets)))
    u["n_train"] = u.regime.map(dict(zip(regimes, [100, 200, 200, 140])))
    lines = usefulness.usefulness_lines(u, "G", rare=["Hernia", "Pneumonia"])
    text = "\n".join(lines)
    # 0.78 - 0.70 = +0.08 against twice hypot(0.01, 0.01) = 0.028: settled, it helps
    assert ("Pretraining on the G images, then fine-tuning on the real ones (half the steps each, the same steps "
            "in all) changes macro AUROC by +0.080 ± 0.014: it helps.") in text
    assert ("Adding 40 G images generated only for the rarest findings (Hernia, Pneumonia), to balance the "
            "training set, changes macro AUROC by +0.010 ± 0.014: no measurable effect.") in text
    # only Effusion has >= 10 test positives; its changes: 0, +0.10 (helps), -0.20 (hurts), spread hypot(.02, .02)
    assert "for the 1 finding with at least 10 positives among the 300 test images" in text
    table = [line for line in lines if line.startswith("| Effusion")]
    assert table == ["| Effusion | 12 | 0.800 ± 0.020 | +0.000 ± 0.028: no measurable effect | "
                     "+0.100 ± 0.028: it helps | -0.200 ± 0.028: it hurts |"]
    assert not any(line.startswith("| Hernia") for line in lines)


def test_spread_note_names_the_models_that_pool_three_seeds():
    """The study profile seeds only the headline models: the note says which spreads pool seeds and
    that the others settle nothing, and a gap between a 3-seed and a 1-seed model is not settled."""
    df = pd.concat([rows({"LSGAN": (10, 1)}, n_seeds=3), rows({"GMVAE-elbo": (50, 1)}, n_seeds=1)])
    note = results.spread_note(df)
    assert note.startswith("Spreads (±) of LSGAN pool 3 training seeds each")
    assert "Those of the other models, with fewer than 3 training seeds" in note
    (line,) = results.ranking_sentences(df[df.space != "pixel"])
    assert "not resolved: 1 training seed" in line


def test_sampler_lines_compare_prior_and_gmm_rows_and_count_blank_frames():
    df = rows({"VAE-elbo-beta1": (60, 2), "VAE-elbo-beta1 · GMM sampler": (40, 2), "GMVAE-elbo": (30, 5),
               "GMVAE-elbo · GMM sampler": (32, 5)})
    blank = pd.DataFrame([{"model": "VAE-elbo-beta1", "blank frames": 12, "samples": 400},
                          {"model": "VAE-elbo-beta1 · GMM sampler", "blank frames": 0, "samples": 400}])
    lines = results.sampler_lines(df, blank, {"VAE-elbo-beta1 · GMM sampler": "VAE-elbo-beta1",
                                              "GMVAE-elbo · GMM sampler": "GMVAE-elbo"})
    # 60 vs 40: gap 20 > 2 * hypot(2, 2) = 5.7; 30 vs 32: gap 2 < 2 * hypot(5, 5)
    assert lines[0] == ("FD (cxr-classifier) VAE-elbo-beta1: prior 60.0 ± 2.0, GMM sampler 40.0 ± 2.0: "
                        "the GMM sampler is better.")
    assert lines[1].endswith("own run: 12 of 400 prior samples, 0 of 400 GMM-sampler samples.")
    assert lines[2].endswith("GMM sampler 32.0 ± 5.0: not resolved within spread.")
    assert len(lines) == 3                                  # GMVAE-elbo has no blank-frame rows


def test_seeds_line_says_which_models_pool_which_seeds():
    from cxrnb.study.scoring import seeds_line
    assert seeds_line([0, 1, 2], ["A", "B"], ["A", "B"]) == "0, 1, 2"
    assert seeds_line([0, 1, 2], ["A"], ["A", "B"]) == "0, 1, 2 for A; its own seed only for the others"
    assert seeds_line([0], [], ["A"]) == "0"
    assert seeds_line([0, 1], [], ["A"]) == "each model its own seed only"
