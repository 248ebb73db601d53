"""Every model the paper trained, by name: ``build("GMVAE-V8")``, ``build("LSGAN", image_size=64)``.

The GMVAE rows are Table 4 verbatim. One conflict in the paper, resolved for the table: §4 says
V3-V6 were ImageNet-normalised and V7-V8 not, while Table 4 marks V8 normalised; we follow Table 4.

Beside the paper's presets, named for what they change (none of them is in the paper):
``VAE-upstream-beta*`` the VAE with the loss of the authors' code, ``VAE-elbo-beta*`` with the
per-image ELBO (losses.py), and ``GMVAE-elbo`` / ``FS-GMVAE-elbo``: GMVAE-V8's latent, prior and
decoder with the ELBO and a conv encoder trained from scratch (no ImageNet weights here).
``DirVAE-elbo``: the VAE's encoder and decoder with a Dirichlet prior on a 50-component simplex
(Joo et al. 2019, the paper's §6 future work; see dirvae.py), on the same ELBO as ``VAE-elbo-beta1``.
``DDPM``: the diffusion model the paper's §6 asks for (models/diffusion.py); ``DDPM-minsnr5`` the same
with min-SNR-gamma loss weights, ``DDPM-cfg`` label-conditioned with classifier-free guidance. ``LSGAN-cond``: the
paper's LSGAN conditioned on the labels (generator input concat(z, y), projection discriminator; see
gan.py), so that the augmentation test of notebook 07 uses the family that scores best.
``LSGAN-DiffAug-EMA``: the paper's LSGAN with the small-data recipe, DiffAugment's translation and
cutout before every discriminator input and sampling from an average of the generator's weights
(gan.py), at the LSGAN's settings. ``ACGAN``: LSGAN-cond's generator with an auxiliary-classifier
discriminator that predicts the labels (gan.py), so that the labels show in the images.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field

from cxrnb.errors import CxrnbError
from cxrnb.models.base import Family, GenerativeModel
from cxrnb.models.diffusion import DDPM
from cxrnb.models.dirvae import DirichletVAE
from cxrnb.models.gan import LSGAN
from cxrnb.models.gmvae import GMVAE
from cxrnb.models.vae import VAE

FAMILIES: dict[Family, type[GenerativeModel]] = {Family.GAN: LSGAN, Family.VAE: VAE, Family.GMVAE: GMVAE,
                                                 Family.DIRVAE: DirichletVAE, Family.DIFFUSION: DDPM}

# Iterations at which the paper shows samples: Figure 6 (VAE, beta = 0.1) and Figure 8 (LSGAN; its
# third grid is the final iteration, which every run saves anyway).
PAPER_SAMPLE_AT: dict[Family, tuple[int, ...]] = {Family.VAE: (0, 100, 250), Family.GAN: (0, 400),
                                                  Family.GMVAE: (0,)}


@dataclass(frozen=True)
class Preset:
    name: str
    family: Family
    image_size: int              # the paper's
    description: str
    kwargs: dict = field(default_factory=dict)   # constructor arguments of the family's class

    @property
    def sample_at(self) -> tuple[int, ...]:
        """The iterations with a sample grid by default: the paper's figures' (iteration 0 elsewhere)."""
        return PAPER_SAMPLE_AT.get(self.family, (0,))

    @property
    def conditional(self) -> bool:
        """Whether the preset's model decodes with labels."""
        return bool(self.kwargs.get("conditional"))


def _vae(beta: float, reduction: str = "paper") -> Preset:
    if reduction == "paper":
        return Preset(f"VAE-beta{beta:g}", Family.VAE, 128, f"VAE of §5.2 with beta = {beta:g} (Figures 5-6)",
                      {"beta": beta})
    what = {"upstream": "the authors' code's loss (KL summed over the batch)",
            "elbo": "the per-image ELBO (calibrated Gaussian likelihood, nats)"}[reduction]
    return Preset(f"VAE-{reduction}-beta{beta:g}", Family.VAE, 128,
                  f"VAE of §5.2, beta = {beta:g}, with {what}; not in the paper",
                  {"beta": beta, "reduction": reduction})


def _gmvae(name: str, z: int, k: int, transition: bool, normalize: bool, encoder: str, decoder: str,
           note: str = "") -> Preset:
    conditional = name.startswith("FS-")         # Table 4's FS rows are the label-conditioned ones
    description = (f"Table 4 {name.replace('-V', ' V')}: Z={z}, K={k}, transition net {transition}, "
                   f"normalize {normalize}, {encoder}, {decoder}"
                   + (", labels concatenated to z" if conditional else "") + note)
    return Preset(name, Family.GMVAE, 224, description,
                  dict(z_dim=z, k=k, transition=transition, normalize=normalize, encoder=encoder,
                       decoder=decoder, conditional=conditional))


def _gmvae_elbo(name: str) -> Preset:
    """GMVAE-V8's latent, prior and Decoder 2, with the ELBO and a conv encoder that can learn."""
    conditional = name.startswith("FS-")
    return Preset(name, Family.GMVAE, 224,
                  "GMVAE-V8's Z=2000, K=300, transition net and Decoder 2"
                  + (", labels concatenated to z" if conditional else "")
                  + ", with the per-image ELBO and the VAE's conv encoder at half width, trained from scratch "
                    "(no ImageNet weights); not in the paper",
                  dict(z_dim=2000, k=300, transition=True, normalize=False, encoder="conv",
                       decoder="decoder2", conditional=conditional, freeze_encoder=False, reduction="elbo"))


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("LSGAN", Family.GAN, 128, "least-squares GAN of Figure 7 (§5.3), 3 generator steps per D step"),
    Preset("LSGAN-cond", Family.GAN, 128, "the LSGAN conditioned on the multi-hot labels: concat(z, y) into the "
           "generator, a projection discriminator (Miyato & Koyama 2018), for the augmentation test; "
           "not in the paper", {"conditional": True}),
    Preset("LSGAN-DiffAug-EMA", Family.GAN, 128, "the LSGAN with the small-data recipe: DiffAugment (translation + "
           "cutout, Zhao et al. 2020) on every image the discriminator sees, samples from an EMA of the "
           "generator's weights (decay 0.999 after a warm-up); not in the paper",
           {"diffaugment": True, "ema_decay": 0.999}),
    Preset("ACGAN", Family.GAN, 128, "LSGAN-cond's generator (concat(z, y)) with an auxiliary-classifier "
           "discriminator (Odena et al. 2017) that predicts the 15 multi-hot labels (BCE) of real images, and "
           "the generator trained to make its fakes show the labels it was given; not in the paper",
           {"conditional": True, "label_head": "classifier"}),
    _vae(1.0), _vae(0.1), _vae(0.002),
    *(_vae(beta, reduction) for reduction in ("upstream", "elbo") for beta in (1.0, 0.1, 0.002)),
    #      name           Z     K    transition normalize encoder        decoder
    _gmvae("FS-GMVAE-V1", 1000, 50,  True,      True,     "vgg16",       "linear"),
    _gmvae("FS-GMVAE-V2", 1000, 50,  True,      False,    "vgg16",       "linear"),
    _gmvae("FS-GMVAE-V3", 1000, 50,  True,      True,     "vgg16",       "decoder1"),
    _gmvae("GMVAE-V3",    1000, 50,  False,     True,     "vgg16",       "decoder1"),
    _gmvae("GMVAE-V4",    1000, 50,  True,      True,     "vgg16",       "decoder1"),
    _gmvae("GMVAE-V5",    1000, 50,  False,     True,     "vgg16",       "decoder2"),
    _gmvae("GMVAE-V6",    2000, 300, True,      True,     "densenet121", "decoder2"),
    _gmvae("GMVAE-V7",    2000, 300, False,     False,    "vgg16",       "decoder2"),
    _gmvae("GMVAE-V8",    2000, 300, True,      True,     "vgg16",       "decoder2",
           " (§4's text says V8 was not normalised)"),
    _gmvae_elbo("GMVAE-elbo"), _gmvae_elbo("FS-GMVAE-elbo"),
    Preset("DirVAE-elbo", Family.DIRVAE, 128,
           "the VAE of §5.2's encoder and decoder with a Dirichlet prior Dir(0.98) on K = 50 components "
           "(Joo et al. 2019) and the per-image ELBO of VAE-elbo-beta1; not in the paper",
           {"k": 50, "alpha0": 0.98, "reduction": "elbo"}),
    Preset("DDPM", Family.DIFFUSION, 128, "denoising diffusion model (eps-prediction, cosine schedule, EMA), "
           "sampled by 50 DDIM steps: the paper's §6 future work; not in the paper"),
    Preset("DDPM-cond", Family.DIFFUSION, 128, "the DDPM with the multi-hot labels added to its time embedding "
           "(class-conditional, no guidance); not in the paper", {"conditional": True}),
    Preset("DDPM-minsnr5", Family.DIFFUSION, 128, "the DDPM with min-SNR-gamma loss weights, gamma = 5 (Hang et al. "
           "2023: min(SNR_t, 5) / SNR_t on the eps-MSE); not in the paper", {"snr_gamma": 5.0}),
    # p = 0.1: Ho & Salimans (2022) found 0.1 and 0.2 alike; w = 2 is their w = 1 (eps = (1 + w') eps_c
    # - w' eps_u), between their best-FID 0.3 and best-IS 4: labels visible, diversity mostly kept
    Preset("DDPM-cfg", Family.DIFFUSION, 128, "the DDPM-cond with classifier-free guidance: labels dropped "
           "with p = 0.1 in training (a learned no-label embedding), guidance scale w = 2 at sampling "
           "(eps_u + w (eps_c - eps_u)); not in the paper",
           {"conditional": True, "label_dropout": 0.1, "guidance_scale": 2.0}),
]}


def build(name: str, image_size: int | None = None, weights: str | None = "auto",
          **overrides) -> GenerativeModel:
    """The preset's model at its paper image size (or ``image_size``); ``overrides`` replace any
    constructor argument. ``weights`` concerns the GMVAE's ImageNet encoder only (see gmvae.py)."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name.lower(), [n.lower() for n in PRESETS], n=1)
        hint = f"did you mean {next(n for n in PRESETS if n.lower() == close[0])!r}? " if close else ""
        raise CxrnbError(f"unknown model preset {name!r}; {hint}valid: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    cls = FAMILIES[preset.family]
    unknown = set(overrides) - set(inspect.signature(cls).parameters)
    if unknown:
        raise CxrnbError(f"{name} has no setting {', '.join(sorted(unknown))}; its settings: "
                         f"{', '.join(p for p in inspect.signature(cls).parameters if p != 'image_size')}")
    size = preset.image_size if image_size is None else image_size      # 0 is an error, not "default"
    kwargs = {**preset.kwargs, "image_size": size, **overrides}
    if preset.family == Family.GMVAE:
        kwargs["weights"] = weights
    model = cls(**kwargs)
    model.preset = name
    return model
