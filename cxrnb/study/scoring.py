"""The evaluation experiment (notebook 07) in steps: real data at one size, the shipped rulers in words,
memorisation summaries, the VAE family's other samplers (ex post, models/expost.py; latent diffusion,
models/latent_diffusion.py), their ceiling (the reconstructions' FD) and blank frames, and the
usefulness of conditional samples for a classifier."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from cxrnb.data import eda
from cxrnb.data.cache import Split, prepare
from cxrnb.data.index import load_index, read_image_sources, read_labels, read_sources, resolve_root
from cxrnb.errors import CxrnbError
from cxrnb.evaluation import evaluate
from cxrnb.evaluation.classifier import Classifier, ClassifierConfig, auroc_per_finding, fit_classifier
from cxrnb.evaluation.features import FeatureExtractor
from cxrnb.evaluation.label_evidence import Movement, movement, own_label_auroc
from cxrnb.evaluation.metrics import Memorisation, blank_frames, ms_ssim_diversity
from cxrnb.evaluation.ruler import ruler_facts, state_sha256
from cxrnb.evaluation.usefulness import (
    REGIMES,
    Regime,
    rare_findings,
    rare_label_rows,
    rare_set_size,
    summarise,
    usefulness,
)
from cxrnb.labels import FINDINGS
from cxrnb.models import PRESETS, diffusion, expost, latent_diffusion, posthoc
from cxrnb.provenance import Provenance
from cxrnb.report import plots
from cxrnb.report.numbers import count
from cxrnb.report.results import FAMILY_NAMES
from cxrnb.report.usefulness import HELD_OUT, TRAINING
from cxrnb.runtime import describe_device
from cxrnb.study import compute
from cxrnb.study.replicates import named_runs, run_spec
from cxrnb.study.runs import Run, diagnose, heldout_split
from cxrnb.study.views import samples, timed_samples


@dataclass
class EvalData:
    """Real images (uint8, (N, 1, S, S)) and labels of each patient-level split, at one size."""

    train: torch.Tensor
    train_y: torch.Tensor
    val: torch.Tensor
    val_y: torch.Tensor
    test: torch.Tensor
    test_y: torch.Tensor
    train_mean: torch.Tensor    # the mean training image, (S, S) in [0, 1] (ImageCache.mean_image)
    prov: Provenance
    key: str                    # the cache's key: which images these are
    test_patients: np.ndarray | None = None   # each test image's patient (bootstrap draws take patients)
    max_train: int | None = None    # the training split capped as train_run(max_images=max_train) caps it
    train_images: list[str] = field(default_factory=list)   # the file name of each training image, row by row


def eval_data(data_root: str | None, image_size: int, seed: int = 0, max_train: int | None = None) -> EvalData:
    """The splits at ``image_size``; with ``max_train``, the training split is the seeded subset a run
    trained with ``max_images=max_train`` and ``seed`` saw (what the usefulness classifiers, post-hoc
    labelling and the memorisation search then use; ``check_training_subset`` holds the runs to it).
    The validation and test splits, and the mean training image, are always whole."""
    cache = prepare(data_root, size=image_size)
    cap = {Split.TRAIN: max_train}
    parts = {s: (cache.split_images(s, cap.get(s), seed), cache.split_labels(s, cap.get(s), seed)) for s in Split}
    prov = cache.provenance(seed=seed, split=None, extra={
        "train / val / test images": " / ".join(str(len(parts[s][0])) for s in parts)})
    return EvalData(*parts[Split.TRAIN], *parts[Split.VAL], *parts[Split.TEST], cache.mean_image(), prov,
                    cache.path.name, cache.split_patients(Split.TEST), max_train,
                    _image_names(cache, cache.rows(Split.TRAIN, max_train, seed)))


def _image_names(cache, rows: np.ndarray) -> list[str]:
    return cache.index.set_index("row").loc[rows, "image"].tolist()


def check_training_subset(runs: Mapping[str, Run], data: EvalData) -> None:
    """With a capped training split, every run must have trained on exactly those images: else the
    memorisation search and the usefulness test's real baseline would miss images a generator learnt
    from. One line naming the first run that did not (the whole split needs no check: it holds them all)."""
    if data.max_train is None:
        return
    for name, run in runs.items():
        spec = run_spec(run)
        if _image_names(run.cache, run.cache.rows(Split.TRAIN, spec["max_images"], spec["seed"])) != data.train_images:
            raise CxrnbError(f"{name} trained on other images (max_images={spec['max_images']}, seed {spec['seed']}) "
                             f"than the {len(data.train_images)} this evaluation uses (max_images={data.max_train}): "
                             "give notebook 07 the max_images and seed of the notebooks that trained it")


def auroc_table(clf: Classifier, data: EvalData) -> pd.DataFrame:
    """Test AUROC per finding with the number of positive test images behind each value."""
    return pd.DataFrame({"AUROC": auroc_per_finding(clf, data.test, data.test_y).round(3),
                         "positives in test": data.test_y[:, :len(FINDINGS)].sum(0).int().numpy()},
                        index=list(FINDINGS)).rename_axis("finding")


def memorisation_table(mem: dict[str, dict[str, Memorisation]]) -> pd.DataFrame:
    """Per model and space: the share of samples closer to a training image than the real test
    images' 5th percentile (≈ 0.05 when nothing is copied), and the median distances."""
    return pd.DataFrame([{"model": name, "space": m.space, "fraction below": round(m.fraction_below, 3),
                          "expected if not copying": m.quantile, "threshold": round(m.threshold, 4),
                          "median sample→train": round(float(np.median(m.gen_dist)), 4),
                          "median test→train": round(float(np.median(m.test_dist)), 4)}
                         for name, spaces in mem.items() for m in spaces.values()])


def memorisation_figure(mem: dict[str, dict[str, Memorisation]], generated: dict[str, torch.Tensor],
                        train: torch.Tensor, n: int = 4) -> Figure:
    """For each model, its ``n`` samples closest to a training image (pixel space) above that image."""
    pairs = {}
    for name, spaces in mem.items():
        close = spaces["pixel"].closest(n)
        pairs[name] = (generated[name][close.generated.to_numpy()],
                       train[close.train.to_numpy()].float() / 255)
    return plots.nearest_pairs(pairs, title="Samples closest to a training image (top) and that image "
                                            "(bottom), pixel distance")


def _saved(run: Run, kind, meta: dict):
    """The ``kind`` sampler saved beside ``run``'s checkpoint when it was fitted with ``meta``, else None."""
    path = run.history.out_dir / SAMPLER_FILES[kind]
    return kind.load(path, run.model) if path.is_file() and kind.read_meta(path) == meta else None


def _fitted(run: Run, kind, seed: int, **fit):
    """``kind`` (``expost.ExPostSampler`` or ``latent_diffusion.LatentDiffusionSampler``) fitted to the
    posterior means of the very training images the run saw, checked on the held-out split
    (``heldout_split``), saved beside the checkpoint (``SAMPLER_FILES``) and reloaded, not refitted,
    while the model's weights (their digest), ``seed`` and the ``fit`` settings are those it was fitted with."""
    meta = {"model_sha256": state_sha256(run.model), "seed": seed, **fit}
    sampler = _saved(run, kind, meta)
    if sampler is None:
        spec = run_spec(run)
        train = run.cache.split_images(Split.TRAIN, spec["max_images"], spec["seed"])
        sampler = kind.fit(run.model, train, run.cache.split_images(heldout_split(run.cache)), seed=seed, **fit)
        sampler.save(run.history.out_dir / SAMPLER_FILES[kind], meta)
    return sampler


SAMPLER_FILES = {expost.ExPostSampler: expost.FILE, latent_diffusion.LatentDiffusionSampler: latent_diffusion.FILE}


def saved_gmm_sampler(run: Run, seed: int = 0) -> expost.ExPostSampler | None:
    """The mixture ``gmm_sampler`` saved beside ``run``'s checkpoint, when it was fitted to these
    very weights with ``seed``; else None (not fitted yet, or the run was retrained since)."""
    return _saved(run, expost.ExPostSampler, {"model_sha256": state_sha256(run.model), "seed": seed})


def gmm_sampler(run: Run, seed: int = 0) -> Run:
    """``run`` sampled ex post (``models.expost``), as a Run named "<preset> · GMM sampler"."""
    sampler = _fitted(run, expost.ExPostSampler, seed)
    c = sampler.chosen
    prov = run.prov.updated(sampler=f"GMM ex post, {c.components} {c.covariance} component(s) in {c.dims} dims")
    return replace(run, preset=sampler.preset, model=sampler, prov=prov)


def ldm_sampler(run: Run, seed: int = 0, iterations: int = latent_diffusion.ITERATIONS) -> Run:
    """``run`` sampled by a diffusion model in its latent (``models.latent_diffusion``, its denoiser
    trained ``iterations`` steps), as a Run named "<preset> · latent diffusion"."""
    sampler = _fitted(run, latent_diffusion.LatentDiffusionSampler, seed, iterations=iterations)
    f = sampler.fit_info
    prov = run.prov.updated(sampler=f"latent diffusion, {f['dims']} dims, {f['iterations']} iterations, "
                                    f"{sampler.sample_steps} DPM-Solver++ steps")
    return replace(run, preset=sampler.preset, model=sampler, prov=prov)


def latent_samplers(runs: dict[str, Run], names: Sequence[str], make=gmm_sampler, seed: int = 0
                    ) -> dict[str, Run]:
    """``make`` (``gmm_sampler``, or ``ldm_sampler`` with its settings bound) of each run named in
    ``names``, keyed by its name ("<preset> · GMM sampler")."""
    out = [make(run, seed) for run in named_runs(runs, names, "latent samplers").values()]
    return {r.preset: r for r in out}


def latent_replicates(seeded: dict[str, tuple[str, Run]], names: Sequence[str], make=gmm_sampler, seed: int = 0
                      ) -> dict[str, tuple[str, Run]]:
    """``make`` of every seed replicate (``replicates.seed_replicates``) of a model in ``names``, keyed
    and paired like the replicates: {"<preset> · GMM sampler · seed 1": ("<preset> · GMM sampler", its
    run)}, so the sampler's scores pool the same training seeds."""
    out = {}
    for model, run in seeded.values():
        if model in names:
            g = make(run, seed)
            out[f"{g.preset} · seed {run_spec(run)['seed']}"] = (g.preset, g)
    return out


def solver_run(run: Run, solver: str, steps: int) -> Run:
    """A diffusion run's same weights sampled by ``solver`` in ``steps`` steps, as a Run named
    "<preset> · <solver> <steps> steps": a row of its own beside the model's own solver, so the
    difference between the two is the solver's alone."""
    if not hasattr(run.model, "sampling"):
        raise CxrnbError(f"{run.preset} is not a diffusion model: it has no solver to swap")
    diffusion.check_sampling(solver, steps)
    model = copy.copy(run.model)                  # the same modules and weights, its own solver settings
    model.solver, model.sample_steps = diffusion.Solver(solver), steps
    # model.preset stays the trained one: the run's snapshots load into it (a quality curve by this solver)
    return replace(run, preset=f"{run.preset} · {solver} {steps} steps", model=model,
                   prov=run.prov.updated(sampler=f"{solver}, {steps} steps"))


def reconstruction_fd(run: Run, data: EvalData, extractor: FeatureExtractor, n_repeats: int,
                      seed: int = 0) -> dict[str, float]:
    """FD in ``extractor``'s space of the model's reconstructions of the real test images (decoded
    posterior means, at the evaluation's size) against those images, drawn as the evaluation draws:
    the ceiling of any sampler of its latent, a GMM's or a latent diffusion's."""
    model, size = run.model, data.test.shape[-1]
    u8 = data.test if model.input_spec.size == size else torch.nn.functional.interpolate(
        data.test.float(), size=model.input_spec.size, mode="area").round().clamp(0, 255).to(torch.uint8)
    z = expost.posterior_means(model, u8).float()
    with model.evaluating():
        recon = torch.cat([model.generate(z[i:i + 256].to(model.device)).cpu() for i in range(0, len(z), 256)])
    if recon.shape[-1] != size:
        recon = torch.nn.functional.interpolate(recon, size=size, mode="area")
    rows = evaluate.evaluate(data.test, {"reconstructions": recon}, [extractor], n_repeats=n_repeats, seed=seed,
                             progress=False)
    fd = rows[(rows.model == "reconstructions") & (rows.metric == evaluate.fd_metric(extractor))].iloc[0]
    return {"FD": float(fd["mean"]), "FD sd": float(fd["std"])}


def seeds_line(seeds: Sequence[int], replicated: Sequence[str], models: Sequence[str]) -> str:
    """'0, 1, 2 for VAE-beta0.002, LSGAN; its own seed only for the others': which models pool which
    training seeds."""
    all_seeds = ", ".join(map(str, seeds))
    if len(seeds) < 2 or set(models) <= set(replicated):
        return all_seeds
    if not replicated:
        return "each model its own seed only"
    return f"{all_seeds} for {', '.join(replicated)}; its own seed only for the others"


def blank_frame_table(generated: dict[str, torch.Tensor], real: torch.Tensor) -> pd.DataFrame:
    """Per model: how many of its samples are blank frames (``metrics.blank_frames``: pixel std under
    a share of the real test images' median), of how many."""
    rows = []
    for name, images in generated.items():
        n, threshold = blank_frames(images, real)
        rows.append({"model": name, "blank frames": n, "samples": len(images), "share": round(n / len(images), 3),
                     "std threshold": round(threshold, 4)})
    return pd.DataFrame(rows)


def conditional_samples(run: Run, labels: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    if not run.model.conditional:
        conditional = [n for n, p in PRESETS.items() if p.conditional]
        raise CxrnbError(f"{run.preset} is not label-conditioned; use one of {', '.join(conditional)}")
    return samples(run, n=len(labels), seed=seed, size=size, labels=labels)


SHARED = (Regime.REAL, Regime.DUPLICATED, Regime.BLANK)     # the regimes without synthetic images


def synthetic_usefulness(data: EvalData, generators: Mapping[str, Sequence[Run]], cfg: ClassifierConfig,
                         ruler: Classifier, seeds=(0, 1, 2), device: str = "auto", rare_k: int = 3,
                         extra_blank_seeds: Sequence[int] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Do each generator's images help a classifier, and do they carry their labels?

    For every classifier seed and every generator (name -> its training runs: its run and its seed
    replicates), one synthetic set of one image per real training image, generated for that image's
    labels, and a second set balancing the ``rare_k`` rarest findings (``rare_label_rows``,
    ``rare_set_size`` images). Classifier seed i uses the images of the generator's run
    ``i % len(runs)``, so with as many runs as seeds the spread covers the generator's training seed
    as well as the classifier's. The regimes without synthetic images (``SHARED``: real, the
    duplicated and blank controls) are trained once per seed, not once per generator: the same seed
    on the same data trains the same classifier. The blank control also trains ``extra_blank_seeds``:
    its classifiers learn nothing from pixels, so each scores the test images by the random features
    it started from, and its score varies between seeds far more than a trained classifier's does;
    three seeds estimate that spread too poorly for the synthetic-only verdict, which is read against
    it, to survive a rerun. Blank classifiers are cheap (no synthetic images to draw).

    Returns (usefulness, evidence). ``usefulness``: one row per (generator, regime, finding), the
    controls under generator "", with mean, spread and n_seeds over the classifier seeds and the test
    set's bootstrap draws, and the paired changes of ``evaluation.usefulness.summarise`` (synthetic-only
    against a blank control of more seeds: paired by draw only).
    ``evidence``: one row per (generator, finding), the ruler's AUROC on each synthetic set for the
    labels it was generated with (``own_label_auroc``), mean ± std over the seeds' sets."""
    if not generators:
        raise CxrnbError("no generator given for the usefulness test: name a model in conditional_models or "
                         "posthoc_models")
    parts, evidence, size = [], [], data.train.shape[-1]
    rare_n = rare_set_size(data.train_y, rare_k)
    for i, seed in enumerate(seeds):
        for j, (name, runs) in enumerate(generators.items()):
            run = runs[i % len(runs)]
            synth = conditional_samples(run, data.train_y, size, seed=seed)
            rare_y = rare_label_rows(data.train_y, rare_n, rare_k, seed=seed)
            rare = (conditional_samples(run, rare_y, size, seed=seed + 1000), rare_y)
            regimes = tuple(r for r in REGIMES if r not in SHARED or j == 0)
            t = usefulness(data.train, data.train_y, synth, data.train_y, data.test, data.test_y, seeds=(seed,),
                           cfg=replace(cfg), device=device, rare=rare, regimes=regimes,
                           test_groups=data.test_patients, long=True)
            t["generator"] = [("" if r in SHARED else name) for r in t.regime]
            parts.append(t)
            auc = own_label_auroc(ruler, synth, data.train_y)
            evidence += [{"generator": name, "seed": seed, "finding": f, "auroc": a} for f, a in auc.items()]
    for seed in [s for s in dict.fromkeys(extra_blank_seeds) if s not in seeds]:
        t = usefulness(data.train, data.train_y, None, None, data.test, data.test_y, seeds=(seed,), cfg=replace(cfg),
                       device=device, regimes=(Regime.BLANK,), test_groups=data.test_patients, long=True)
        parts.append(t.assign(generator=""))
    long = pd.concat(parts, ignore_index=True)
    described = long.drop(columns=["seed", "resample", "auroc", "generator"]).drop_duplicates(["regime", "finding"])
    tables = []
    for name in generators:
        own = long[long.generator.isin(["", name])]
        t = summarise(own).merge(described, on=["regime", "finding"], how="left")
        tables.append(t.assign(generator=[("" if r in SHARED else name) for r in t.regime]))
    out = pd.concat(tables, ignore_index=True).drop_duplicates(["generator", "regime", "finding"])
    out["generator runs"] = out.generator.map(lambda g: min(len(generators[g]), len(seeds)) if g else 0)
    out["rare findings"] = ", ".join(rare_findings(data.train_y, rare_k))
    ev = (pd.DataFrame(evidence).groupby(["generator", "finding"], sort=False)["auroc"]
          .agg(mean="mean", std="std", n_sets="count").reset_index())
    ev["training runs"] = ev.generator.map(lambda g: min(len(generators[g]), len(seeds)))
    return out, ev


def fit_labeller(data: EvalData, cfg: ClassifierConfig, seed: int = 100, device: str = "auto") -> Classifier:
    """The labeller of post-hoc labelling (``models.posthoc``): a classifier trained here on the real
    training images with ``cfg`` and classifier seed ``seed`` (one no usefulness classifier uses), never
    the shipped ruler, which later judges the images it picks."""
    return fit_classifier(data.train, data.train_y, replace(cfg, seed=seed), device=device, progress=False)


def posthoc_labelled(run: Run, labeller: Classifier, pool: int = posthoc.POOL) -> Run:
    """``run`` (an unconditional model) made conditional by post-hoc labelling with ``labeller``
    (``fit_labeller``), as a Run named "<preset> · labelled post hoc"."""
    name = f"a labeller (a classifier trained here on the real training images, seed {labeller.cfg.seed})"
    model = posthoc.PosthocLabelled(run.model, labeller.predict_proba, pool, labeller_name=name)
    return replace(run, preset=model.preset, model=model,
                   prov=run.prov.updated(sampler=f"labelled post hoc, best of {pool} by a trained labeller"))


def labelled_replicates(seeded: dict[str, tuple[str, Run]], names: Sequence[str], labeller: Classifier
                        ) -> dict[str, tuple[str, Run]]:
    """``posthoc_labelled`` of every seed replicate of a model in ``names``, with the same labeller,
    keyed and paired like the replicates, so the labelled model's scores pool the same training seeds."""
    out = {}
    for model, run in seeded.values():
        if model in names:
            g = posthoc_labelled(run, labeller)
            out[f"{g.preset} · seed {run_spec(run)['seed']}"] = (g.preset, g)
    return out


def usefulness_generators(runs: dict[str, Run], seeded: dict[str, tuple[str, Run]], names: Sequence[str]
                          ) -> dict[str, list[Run]]:
    """{name: [its run, then its seed replicates]} for each generator of the usefulness test."""
    chosen = named_runs(runs, names, "The usefulness test")
    return {name: [run] + [r for model, r in seeded.values() if model == name] for name, run in chosen.items()}


def generators_line(generators: dict[str, list[Run]]) -> str:
    """The usefulness test's generators in one provenance line: name, epochs, training runs."""
    return "; ".join(f"{name}, {runs[0].prov.epochs:g} epochs, {count(len(runs), 'training seed')}"
                     for name, runs in generators.items())


def label_references(ruler: Classifier, data: EvalData) -> dict[str, float]:
    """The ruler's macro AUROC on real images, the references of the label evidence: the held-out
    test images, and the training images it learnt from (what a generator that copied them would score)."""
    return {HELD_OUT: float(own_label_auroc(ruler, data.test, data.test_y)["macro"]),
            TRAINING: float(own_label_auroc(ruler, data.train, data.train_y)["macro"])}


def figure_stem(name: str) -> str:
    """A model's name as a file name: "GMVAE-elbo · GMM sampler" -> "GMVAE-elbo_GMM_sampler"."""
    return name.replace(" · ", "_").replace(" ", "_")


def label_movements(runs: dict[str, Run], per_label: dict[str, dict[str, torch.Tensor]]) -> dict[str, Movement]:
    """``label_evidence.movement`` of each generator's per-label rows, except a post-hoc labelled one's:
    its label picks another sample of the pool, so the image changes as much as with another latent
    by construction, which says nothing of conditioning."""
    return {name: movement(rows) for name, rows in per_label.items()
            if not isinstance(runs[name].model, posthoc.PosthocLabelled)}


def describe_generator(run: Run, training_seeds: int = 1, n: int = 32, seed: int = 0) -> str:
    """The usefulness generator in words, with its collapse diagnostics (results.md names it: a
    classifier result means little if the synthetic images came from a collapsed model). A model
    without an encoder (GAN, DDPM) has no posterior to collapse: it is described by the diversity of
    ``n`` samples instead (MS-SSIM of random pairs, beside as many real test images: mode collapse
    shows as samples far more alike than real images). ``training_seeds``: how many of the generator's
    training runs made the synthetic sets (classifier seed i used run i's images)."""
    runs = count(training_seeds, "training seed")
    if not run.model.has_encoder:
        real = run.cache.split_images(Split.TEST, max_images=n, seed=seed)
        what = (run.model.describe() if isinstance(run.model, posthoc.PosthocLabelled) else
                f"a {FAMILY_NAMES[run.model.family]} model: no encoder, so no reconstruction diagnostics")
        return (f"{run.preset}, {run.prov.epochs:g} epochs, {runs}, {what}; within-set MS-SSIM of {n} samples "
                f"{ms_ssim_diversity(samples(run, n, seed)):.3f} against {ms_ssim_diversity(real):.3f} for "
                f"{len(real)} real test images (lower = more diverse)")
    d = diagnose(run, Split.TEST)
    state = "collapsed" if d.collapsed else "not collapsed"
    return (f"{run.preset}, {run.prov.epochs:g} epochs, {runs}, {state} (seed {run.prov.seed}: "
            f"{d.active_units} active units, held-out "
            f"reconstruction error {d.mse:.4f} against {d.mean_image_mse:.4f} for the mean training image)")


def families(runs: dict[str, Run]) -> dict[str, str | None]:
    """Each run's family for the family ranking and the targets. A post-hoc labelled run has none: its
    images are a selection (the labeller keeps one of a pool of the base model's samples), so its FD
    is not a model's own and competes with no family's best; it is judged in the augmentation test."""
    return {name: None if isinstance(run.model, posthoc.PosthocLabelled) else run.model.family
            for name, run in runs.items()}


def timed_samples_per_run(runs: dict[str, Run], n: int, seed: int = 0, size: int | None = None
                          ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """``n`` samples of every run at ``size``, and each model's wall seconds per image while drawing
    them: the price of a sample, beside its quality (a diffusion model pays once per DDIM step)."""
    timed = {name: timed_samples(run, n, seed, size=size) for name, run in runs.items()}
    return {k: v[0] for k, v in timed.items()}, {k: v[1] for k, v in timed.items()}


SOLVER_NAMES = {diffusion.Solver.DDIM: "DDIM", diffusion.Solver.DPM_SOLVER: "DPM-Solver++"}


def sampling_line(runs: dict[str, Run], seconds: dict[str, float], device: str = "auto") -> str:
    """The sampling cost per model in words, with its solver's steps where a model has them."""
    def steps(r: Run) -> str:
        if not r.model.sample_steps:
            return ""
        solver = getattr(r.model, "solver", diffusion.Solver.DDIM)
        return f" ({r.model.sample_steps} {SOLVER_NAMES[solver]} steps)"
    return (f"Sampling cost on {describe_device(device)}, seconds per image: "
            + "; ".join(f"{name} {seconds[name]:.2g}{steps(r)}" for name, r in runs.items()) + ".")


def data_lines(data_root: str | None, runs: dict[str, Run], full_labels: str | None = None,
               top: int = 3) -> list[str]:
    """What results.md must say about the data: the label mix against full CXR14 (the ``top``
    most over- and under-represented labels), the source repositories, and each model's budget."""
    root = resolve_root(data_root)
    sub, full = load_index(root), read_labels(full_labels)
    prev = eda.prevalence_vs_full(sub, full)
    fmt = lambda t: ", ".join(f"{n} {r['subset %']:g}% vs {r['full CXR14 %']:g}%"  # noqa: E731
                              for n, r in t.iterrows())
    out = [f"{len(sub):,} images; label prevalence against full CXR14 ({len(full):,} images): "
           f"most over-represented {fmt(prev.head(top))}; most under-represented "
           f"{fmt(prev.tail(top).iloc[::-1])}. Not a random sample of CXR14."]
    src = read_sources(root)
    if src is not None:
        out.append("Sources (provenance.csv): " + ", ".join(f"{n} {c:,}" for n, c in src.items()) + ".")
    out.append("Training budget per model: " + "; ".join(
        f"{name} {r.prov.extra.get('iterations', '?')} iterations, {r.prov.epochs:g} epochs"
        for name, r in runs.items()) + ".")
    return out


def over_represented_line(data_root: str | None, full_labels: str | None = None, top: int = 3) -> str:
    """The findings the data over-represents against full CXR14, each with the source repository most
    of its images came from (provenance.csv): a generator can learn a source's style rather than
    the finding, and a classifier can then learn the style from its images."""
    root = resolve_root(data_root)
    sub, full = load_index(root), read_labels(full_labels)
    prev = eda.prevalence_vs_full(sub, full)
    prev = prev[prev.index.isin(FINDINGS) & (prev.ratio > 1)].head(top)
    sources = read_image_sources(root)
    parts = []
    for name, r in prev.iterrows():
        text = f"{name} (on {r['subset %']:g}% of the images against {r['full CXR14 %']:g}% in full CXR14"
        if sources is not None:
            carriers = sources.reindex(sub.loc[sub[name] == 1, "image"]).dropna()
            if len(carriers):
                main = carriers.value_counts()
                text += f"; {main.iloc[0]:,} of its {len(carriers):,} images from {main.index[0]}"
        parts.append(text + ")")
    return ("The findings this data over-represents most: " + "; ".join(parts) + ". Where one source supplies "
            "most of a finding's images, a generator can learn that source's look rather than the finding, and "
            "a classifier trained on its images can learn the look.")


def ruler_lines() -> list[str]:
    """The shipped feature networks in words, for results.md: what each is, the data it was fitted
    to, its checksum (verified when it was loaded), its resolution, effective dimension and AUROC."""
    out = []
    for name, f in ruler_facts().items():
        auroc = f.get("test_macro_auroc")
        data = f.get("data", {})
        fitted = (f"trained once on the {data.get('source', '?')} training split, test macro AUROC {auroc:.3f}"
                  if auroc is not None else
                  f"its feature scale set once on the {data.get('source', '?')} training split")
        out.append(f"`{name}`: {f['training']}; {fitted}. Shipped in the package (SHA-256 {f['sha256'][:12]}…, "
                   f"checked at load); images of every size scored at {f['resolution']} px; {f['dim']} "
                   f"features, effective dimension {f['effective_dimension']:.1f} on the real test images.")
    return out


def fd_score(run: Run, data: EvalData, extractor: FeatureExtractor, n: int, n_repeats: int, seed: int = 0,
             size: int | None = None):
    """A score for ``compute.quality_curve``: FD in ``extractor``'s space of ``n`` samples of ``run``
    with the given weights against the real test images, mean ± std over ``n_repeats`` subsets,
    drawn as the evaluation draws them, so a curve's points and the ladder's rungs share one scale."""
    metric = evaluate.fd_metric(extractor)

    def score(model) -> dict[str, float]:
        images = samples(replace(run, model=model), n, seed, size=size)
        rows = evaluate.evaluate(data.test, {run.preset: images}, [extractor], n_repeats=n_repeats, seed=seed,
                                 progress=False)
        fd = rows[(rows.model == run.preset) & (rows.metric == metric)].iloc[0]
        return {"FD": float(fd["mean"]), "FD sd": float(fd["std"])}
    return score


def quality_curves(runs: dict[str, Run], data: EvalData, extractor: FeatureExtractor, n: int, n_repeats: int,
                   seed: int = 0, size: int | None = None) -> pd.DataFrame:
    """Every run's ``compute.quality_curve`` scored with ``fd_score``, one frame (column ``model``)."""
    return pd.concat([compute.quality_curve(run, fd_score(run, data, extractor, n, n_repeats, seed, size))
                      for run in runs.values()], ignore_index=True)
