"""The usefulness protocol: every regime at equal gradient steps, its controls, the rare-finding
label rows and fine-tuning from a pretrained classifier, checked by hand on toy data."""

import math

import pytest
import torch

from cxrnb.errors import CxrnbError
from cxrnb.evaluation import usefulness as U
from cxrnb.evaluation.classifier import ClassifierConfig, fit_classifier
from cxrnb.evaluation.usefulness import (
    REGIMES,
    Regime,
    rare_findings,
    rare_label_rows,
    rare_set_size,
    stage_steps,
    usefulness,
)
from cxrnb.labels import FINDINGS, LABELS
from tests.test_classifier import toy


def test_usefulness_table():
    real, synth, test = toy(32, seed=0), toy(32, seed=6), toy(32, seed=7)
    cfg = ClassifierConfig(epochs=1, batch_size=16, width=4)
    rare = toy(16, seed=8)
    df = usefulness(*real, synth[0].float().unsqueeze(1) / 255, synth[1], *test, seeds=(0, 1),
                    cfg=cfg, progress=False, rare=rare)
    assert list(df.regime.unique()) == list(REGIMES)
    assert list(df[df.regime == "real"].finding) == list(FINDINGS) + ["macro"]
    macro = df[df.finding == "macro"].set_index("regime")
    assert (macro.n_seeds == 2).all() and (macro["std"] >= 0).all()
    assert macro.n_train.to_dict() == {"real": 32, "real+synthetic": 64, "synthetic, then real": 64,
                                       "real+synthetic (rare findings)": 48, "real+real (duplicated)": 64,
                                       "synthetic": 32, "blank (mean grey + noise)": 32}
    assert (macro.steps == 1 * 32 // 16).all()            # equal gradient steps in every regime
    # test positives per finding, counted by hand from the toy labels
    per = df[df.regime == "real"].set_index("finding").test_positives
    assert per["Atelectasis"] == int(test[1][:, 0].sum()) and per["Hernia"] == 0
    with pytest.raises(CxrnbError, match="sizes differ"):
        usefulness(*real, torch.rand(32, 1, 16, 16), synth[1], *test, seeds=(0,), cfg=cfg, progress=False)


def test_without_rare_images_there_is_no_rare_regime_and_regimes_can_be_chosen():
    real, test = toy(32, seed=0), toy(32, seed=7)
    cfg = ClassifierConfig(epochs=1, batch_size=16, width=4)
    df = usefulness(*real, *real, *test, seeds=(0,), cfg=cfg, progress=False,
                    regimes=(Regime.REAL, Regime.RARE, Regime.BLANK))
    assert list(df.regime.unique()) == ["real", "blank (mean grey + noise)"]


def test_stage_steps_split_evenly_and_sum_to_the_total():
    assert stage_steps(5, 2) == [3, 2] and stage_steps(4, 2) == [2, 2] and stage_steps(7, 1) == [7]


def test_equal_steps_rule_every_regime_trains_the_same_steps_in_all(monkeypatch):
    """Spy on every classifier fit: per regime and seed, the steps sum to the real set's epochs of
    steps; the pretrained regime fits twice, synthetic first, then real starting from that fit."""
    calls, real_fit = [], fit_classifier

    def spy(x, y, cfg, **kw):
        clf = real_fit(x, y, cfg, **kw)
        calls.append({"n": len(x), "steps": cfg.steps, "seed": cfg.seed, "init": kw.get("init"), "clf": clf})
        return clf

    monkeypatch.setattr(U, "fit_classifier", spy)
    real, synth, test = toy(48, seed=0), toy(32, seed=6), toy(32, seed=7)
    cfg = ClassifierConfig(epochs=3, batch_size=16, width=4)
    steps = 3 * (48 // 16)
    usefulness(*real, *synth, *test, seeds=(0, 1), cfg=cfg, progress=False,
               regimes=(Regime.REAL, Regime.PRETRAINED, Regime.MIXED))
    assert [c["steps"] for c in calls] == [steps, steps, 5, 4, 5, 4, steps, steps]
    pre = calls[2:6]
    assert [c["n"] for c in pre] == [32, 48, 32, 48]          # synthetic, then real, per seed
    assert pre[0]["init"] is None and pre[1]["init"] is pre[0]["clf"] and pre[3]["init"] is pre[2]["clf"]
    assert [c["seed"] for c in calls] == [0, 1, 0, 0, 1, 1, 0, 1]


def test_one_step_cannot_be_split_into_pretraining_and_fine_tuning():
    real, synth, test = toy(16, seed=0), toy(16, seed=6), toy(16, seed=7)
    with pytest.raises(CxrnbError, match=r"1 gradient step\(s\) \(16 real images, batch 16\) cannot be split over 2"):
        usefulness(*real, *synth, *test, seeds=(0,), cfg=ClassifierConfig(epochs=1, batch_size=16, width=4),
                   progress=False, regimes=(Regime.REAL, Regime.PRETRAINED))
    with pytest.raises(CxrnbError, match="use more steps$"):
        usefulness(*real, *synth, *test, seeds=(0,), cfg=ClassifierConfig(steps=1, batch_size=16, width=4),
                   progress=False, regimes=(Regime.PRETRAINED,))
    # two steps split into one of pretraining and one of fine-tuning (the smoke profile's case)
    out = usefulness(*real, *synth, *test, seeds=(0,), cfg=ClassifierConfig(epochs=2, batch_size=16, width=4),
                     progress=False, regimes=(Regime.PRETRAINED,), resamples=0)
    assert (out.steps == 2).all()


def test_fine_tuning_starts_from_the_pretrained_weights_and_leaves_them_alone():
    x, y = toy(32, seed=0)
    first = fit_classifier(x, y, ClassifierConfig(steps=2, batch_size=16, width=4), progress=False)
    before = {k: v.clone() for k, v in first.net.state_dict().items()}
    # lr 0: Adam moves nothing, so the fine-tuned weights are the pretrained ones exactly
    tuned = fit_classifier(x, y, ClassifierConfig(steps=2, batch_size=16, width=4, lr=0.0, weight_decay=0.0),
                           progress=False, init=first)
    conv = "body.0.weight"
    assert torch.equal(tuned.net.state_dict()[conv], before[conv])
    assert all(torch.equal(v, before[k]) for k, v in first.net.state_dict().items())
    assert tuned.net is not first.net


def test_rare_findings_and_their_label_rows_by_hand():
    y = torch.zeros(10, len(LABELS))
    y[:6, FINDINGS.index("Effusion")] = 1          # 6
    y[6:9, FINDINGS.index("Mass")] = 1             # 3
    y[9, FINDINGS.index("Hernia")] = 1             # 1
    y[8, FINDINGS.index("Hernia")] = 1             # Hernia 2 in all; Mass and Hernia share row 8
    assert rare_findings(y, k=2) == ["Hernia", "Mass"]
    rows = rare_label_rows(y, n=200, k=2, seed=0)
    assert rows.shape == (200, len(LABELS))
    carriers = {tuple(r.tolist()) for r in y[6:10]}      # the rows with Mass or Hernia
    assert {tuple(r.tolist()) for r in rows} == carriers  # every carrier drawn, nothing else
    assert torch.equal(rows, rare_label_rows(y, n=200, k=2, seed=0))   # seeded
    # counts Effusion 6, Mass 3, Hernia 2: median 3; two rarest hold 5, so 2 * 3 - 5 = 1 -> at least k = 2
    assert rare_set_size(y, k=2) == 2
    y[:6, FINDINGS.index("Atelectasis")] = 1        # counts 6, 6, 3, 2: median 4.5; 2 * 4.5 - 5 = 4
    assert rare_set_size(y, k=2) == 4
    with pytest.raises(CxrnbError, match="no training image"):
        rare_label_rows(torch.zeros(4, len(LABELS)), n=3)
def test_usefulness_on_the_phantom_blank_control_is_chance(tmp_path_factory, one_thread):
    """Blank images with real labels teach nothing about pixels: macro AUROC ≈ 0.5 within the seeds'
    spread (constant images without noise scored 0.61 ± 0.04 here: a BatchNorm artefact)."""
    from cxrnb.data.phantom import write_phantom
    from cxrnb.study import scoring

    root = write_phantom(tmp_path_factory.mktemp("phantom"), n=320, size=32, seed=0, progress=False)
    data = scoring.eval_data(str(root), 32)
    cfg = ClassifierConfig(epochs=10, batch_size=32, width=8, lr=3e-3)
    df = usefulness(data.train, data.train_y, data.train, data.train_y, data.test, data.test_y,
                    seeds=(0, 1, 2), cfg=cfg, progress=False)
    macro = df[df.finding == "macro"].set_index("regime")
    blank = macro.loc["blank (mean grey + noise)"]
    assert blank.n_seeds == 3 and abs(blank["mean"] - 0.5) <= max(2 * blank["std"], 0.05)




def test_synthetic_usefulness_with_two_generators(phantom_root, tmp_path, one_thread, monkeypatch):
    """Notebook 07's step end to end on the phantom, with a conditional GAN (the AC-GAN: the smoke
    profile's notebook run has the other one, LSGAN-cond) and a post-hoc labelled one: each
    classifier seed uses its own generator run, the controls are trained once per seed (not once per
    generator) and are the same rows in both generators' summaries, each change is against those
    shared controls, every regime is scored, the rare findings are named, and the label
    evidence is the ruler's AUROC on each synthetic set."""
    from cxrnb import study
    from cxrnb.evaluation.ruler import load_ruler
    from cxrnb.study import scoring

    common = dict(image_size=64, max_images=32, batch_size=16, epochs=1, device="cpu", runs_dir=tmp_path,
                  sample_at=[0], progress=False)
    cond = study.train_run("ACGAN", str(phantom_root), **common)
    gan = study.train_run("LSGAN", str(phantom_root), **common)
    data = scoring.eval_data(str(phantom_root), 32)
    assert data.test_patients is not None and len(data.test_patients) == len(data.test)
    cfg = ClassifierConfig(epochs=1, batch_size=8, width=4)
    labelled = scoring.posthoc_labelled(gan, scoring.fit_labeller(data, cfg, device="cpu"), pool=4)
    assert labelled.preset == "LSGAN · labelled post hoc" and labelled.model.conditional
    trained = []
    fit = U.fit_classifier
    monkeypatch.setattr(U, "fit_classifier", lambda x, y, c, **kw: trained.append(len(x)) or fit(x, y, c, **kw))
    summarised = []                     # the rows each generator's table is summarised from
    summarise = scoring.summarise
    monkeypatch.setattr(scoring, "summarise", lambda long: summarised.append(long) or summarise(long))
    df, ev = scoring.synthetic_usefulness(data, {"ACGAN": [cond], labelled.preset: [labelled]}, cfg,
                                          load_ruler(), seeds=(0, 1), extra_blank_seeds=(1, 7))
    # per seed: 3 shared regimes once, then 4 synthetic regimes (pretraining in 2 stages) per generator;
    # then the blank control alone for the extra seed 7 (seed 1 it has already)
    assert len(trained) == 2 * (3 + 2 * 5) + 1
    macro = df[df.finding == "macro"]
    shared = macro[macro.generator == ""].set_index("regime")
    assert list(shared.index) == list(scoring.SHARED)
    assert shared.n_seeds.to_dict() == {Regime.REAL: 2, Regime.DUPLICATED: 2, Regime.BLANK: 3}
    for name in ("ACGAN", labelled.preset):
        own = macro[macro.generator == name].set_index("regime")
        assert set(own.index) == set(REGIMES) - set(scoring.SHARED) and (own.n_seeds == 2).all()
        assert (df[df.generator == name]["generator runs"] == 1).all()
        # paired by seed, the mean change is the difference of the means against the shared controls
        mixed = own.loc[Regime.MIXED]
        assert mixed.change == pytest.approx(mixed["mean"] - shared.loc[Regime.REAL, "mean"])
        synth = own.loc[Regime.SYNTHETIC]       # against the blank control's 3 seeds: paired by draw only
        assert synth.vs_blank == pytest.approx(synth["mean"] - shared.loc[Regime.BLANK, "mean"])
        assert math.isfinite(synth.vs_blank_std) and synth.vs_blank_std > 0
        rows = next(t for t in summarised if (t.generator == name).any())
        rows = rows[rows.finding == "macro"]
        blank, alone = rows[rows.regime == Regime.BLANK], rows[rows.regime == Regime.SYNTHETIC]
        assert sorted(blank.seed.unique()) == [0, 1, 7]
        assert (synth.vs_blank, synth.vs_blank_std) == pytest.approx(U._unpaired(alone, blank))
        assert synth.change_std > 0
    rare = df["rare findings"].iloc[0].split(", ")
    assert rare == rare_findings(data.train_y, 3)
    n_rare = rare_set_size(data.train_y, 3)
    assert macro[macro.regime == Regime.RARE].n_train.eq(len(data.train) + n_rare).all()
    # label evidence: one macro row per generator over the 2 synthetic sets, an AUROC in [0, 1]
    ev_macro = ev[ev.finding == "macro"].set_index("generator")
    assert list(ev_macro.index) == ["ACGAN", labelled.preset] and (ev_macro.n_sets == 2).all()
    assert ev_macro["mean"].between(0, 1).all() and (ev_macro["training runs"] == 1).all()


@pytest.mark.real
def test_over_represented_findings_name_their_main_source(real_root):
    """The sentence's numbers by hand from the two CSV files: the finding most over-represented
    against full CXR14, and how many of its images one source repository supplied."""
    import pandas as pd

    from cxrnb.study import scoring

    line = scoring.over_represented_line(str(real_root))
    table = pd.read_csv(real_root / "Data_Entry_2017.csv").merge(pd.read_csv(real_root / "provenance.csv"),
                                                               on="Image Index")
    carriers = table[table["Finding Labels"].str.split("|").map(lambda f: "Pneumonia" in f)]
    main = carriers["source repository"].value_counts()
    share = round(100 * len(carriers) / len(table), 1)
    assert line.startswith(f"The findings this data over-represents most: Pneumonia (on {share:g}% of the images")
    assert f"{main.iloc[0]:,} of its {len(carriers):,} images from {main.index[0]}" in line


def _long(regime, full, draws, seeds=None):
    """``seed_aurocs``-shaped rows of one regime: per seed its whole-test score and its draws."""
    out = []
    for seed, f, ds in zip(seeds or range(len(full)), full, draws):
        out.append({"regime": regime, "seed": seed, "resample": U.FULL, "finding": "macro", "auroc": f})
        out += [{"regime": regime, "seed": seed, "resample": b, "finding": "macro", "auroc": a}
                for b, a in enumerate(ds)]
    return out


def test_summarise_pools_seeds_and_draws_and_pairs_the_changes_by_hand():
    """Two seeds, two bootstrap draws each: the spread by the law of total variance, the change
    against real from differences paired by seed and by draw; seeds of other numbers pair by order."""
    import math

    import pandas as pd

    long = pd.DataFrame(_long(Regime.REAL, [0.70, 0.72], [[0.68, 0.72], [0.70, 0.74]])
                        + _long(Regime.MIXED, [0.75, 0.79], [[0.74, 0.80], [0.77, 0.81]], seeds=[5, 9])
                        + _long(Regime.BLANK, [0.50, 0.50], [[0.49, 0.51], [0.50, 0.50]])
                        + _long(Regime.SYNTHETIC, [0.60, 0.64], [[0.60, 0.62], [0.63, 0.67]]))
    s = U.summarise(long).set_index("regime")
    # real: var of (0.70, 0.72) = 0.0002, plus the mean draw variance (0.0008, 0.0008)
    assert s.loc["real", "mean"] == pytest.approx(0.71) and s.loc["real", "std"] == pytest.approx(math.sqrt(0.001))
    assert s.loc["real", "n_seeds"] == 2 and pd.isna(s.loc["real", "change"])
    # mixed (seeds 5, 9 pair with 0, 1) - real: whole-set differences 0.05, 0.07 (var 0.0002); per-draw
    # differences (0.06, 0.08) and (0.07, 0.07): variances 0.0002 and 0, mean 0.0001
    assert s.loc["real+synthetic", "change"] == pytest.approx(0.06)
    assert s.loc["real+synthetic", "change_std"] == pytest.approx(math.sqrt(0.0003))
    # the paired spread is below the independent one, hypot of the two pooled spreads
    assert s.loc["real+synthetic", "change_std"] < math.hypot(s.loc["real", "std"], s.loc["real+synthetic", "std"])
    # synthetic - blank: 0.10, 0.14 (var 0.0008); draws (0.11, 0.11), (0.13, 0.17): variances 0, 0.0008
    assert s.loc["synthetic", "vs_blank"] == pytest.approx(0.12)
    assert s.loc["synthetic", "vs_blank_std"] == pytest.approx(math.sqrt(0.0008 + 0.0004))
    assert pd.isna(s.loc["real+synthetic", "vs_blank"])


def test_a_blank_control_with_more_seeds_is_compared_by_draw_only_by_hand():
    """The blank control with three seeds against synthetic images with two: the seeds cannot pair,
    the draws still do. Real and mixed, two seeds each, keep their paired change."""
    import pandas as pd

    long = pd.DataFrame(_long(Regime.REAL, [0.70, 0.72], [[0.68, 0.72], [0.70, 0.74]])
                        + _long(Regime.MIXED, [0.75, 0.79], [[0.74, 0.80], [0.77, 0.81]])
                        + _long(Regime.BLANK, [0.50, 0.50, 0.56], [[0.49, 0.51], [0.50, 0.50], [0.55, 0.57]])
                        + _long(Regime.SYNTHETIC, [0.60, 0.64], [[0.60, 0.62], [0.63, 0.67]]))
    s = U.summarise(long).set_index("regime")
    # blank: var of (0.50, 0.50, 0.56) = 0.0024 / 2 = 0.0012, draw variances (0.0002, 0, 0.0002): mean 0.0004/3
    assert s.loc["blank (mean grey + noise)", "std"] == pytest.approx(math.sqrt(0.0012 + 0.0004 / 3))
    assert s.loc["blank (mean grey + noise)", "n_seeds"] == 3
    # synthetic - blank: means 0.62 - 0.52; seed part 0.0008 + 0.0012; draw part over the six seed pairs:
    # a0 - b: (0.11, 0.11), (0.10, 0.12), (0.05, 0.05); a1 - b: (0.14, 0.16), (0.13, 0.17), (0.08, 0.10),
    # variances 0, 0.0002, 0, 0.0002, 0.0008, 0.0002: mean 0.0014 / 6
    assert s.loc["synthetic", "vs_blank"] == pytest.approx(0.10)
    assert s.loc["synthetic", "vs_blank_std"] == pytest.approx(math.sqrt(0.0020 + 0.0014 / 6))
    # below the two pooled spreads in quadrature (sqrt(0.0013 + 0.0012 + 0.0004 / 3)): the draws pair
    assert s.loc["synthetic", "vs_blank_std"] < math.sqrt(0.0013 + 0.0012 + 0.0004 / 3)
    # mixed against real, two seeds each: still paired by seed (the hand values of the paired test)
    assert s.loc["real+synthetic", "change"] == pytest.approx(0.06)
    assert s.loc["real+synthetic", "change_std"] == pytest.approx(math.sqrt(0.0003))


def test_summarise_refuses_doubled_rows_and_judges_no_single_seed():
    import pandas as pd

    doubled = pd.DataFrame(_long(Regime.MIXED, [0.7], [[0.7]]) * 2)
    with pytest.raises(CxrnbError, match="appear twice"):
        U.summarise(doubled)
    one = U.summarise(pd.DataFrame(_long(Regime.REAL, [0.7], [[0.6, 0.8]]) + _long(Regime.MIXED, [0.8], [[0.7, 0.9]])))
    assert one["std"].isna().all() and one.change_std.isna().iloc[1]      # one seed: no spread, not judged


def test_test_resamples_are_seeded_and_draw_whole_patients():
    import numpy as np

    a, b = U.test_resamples(50, 4), U.test_resamples(50, 4)
    assert len(a) == 4 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(len(x) == 50 and x.min() >= 0 and x.max() < 50 for x in a)
    groups = np.repeat(np.arange(10), 5)[::-1]          # 10 patients, 5 images each
    for draw in U.test_resamples(50, 20, groups=groups):
        assert len(draw) == 50                            # 10 patients drawn, 5 images each
        drawn = groups[draw]
        for patient in np.unique(drawn):                  # each drawn patient brings all 5 of its images
            assert (drawn == patient).sum() % 5 == 0
    with pytest.raises(CxrnbError, match="patient ids"):
        U.test_resamples(50, 2, groups=groups[:10])


def test_aurocs_are_sklearns_with_ties_and_one_class_findings():
    import numpy as np
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    p = rng.integers(0, 5, (40, len(FINDINGS))) / 4          # five levels: many ties
    y = (rng.random((40, len(FINDINGS))) < 0.3).astype(float)
    y[:, 0] = 0                                               # one class only: no AUROC
    auc = U.aurocs(p, y)
    assert np.isnan(auc[FINDINGS[0]])
    for j, f in enumerate(FINDINGS[1:], start=1):
        assert auc[f] == pytest.approx(roc_auc_score(y[:, j], p[:, j]))
    assert auc["macro"] == pytest.approx(np.mean([auc[f] for f in FINDINGS[1:]]))
