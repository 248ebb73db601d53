"""Feature spaces for the sample-quality metrics: where a Fréchet distance is measured matters.

Four extractors share one interface (``name``, ``dim``, ``available``, ``why_unavailable``,
``__call__(x) -> (N, D)`` for 1-channel images in [0, 1]):

- ``cxr-classifier``: penultimate features of the project's own CXR classifier
  (``cxrnb.evaluation.classifier``), trained once on the real training split and shipped with the
  package (``cxrnb.evaluation.ruler``), so every run and machine measures with the same ruler;
- ``random-init``: the same architecture with fixed random weights, never trained, read at every
  stage: a space not fitted to these images (random-network features rank generators usefully,
  Naeem et al., 2020), its weights shipped beside the classifier's;
- ``xrv-densenet121``: torchxrayvision's DenseNet121 trained on seven CXR datasets, the usual
  domain-specific feature space for chest X-rays;
- ``inception-v3``: the ImageNet network behind the standard FID.

The two project spaces read every image at the ruler's resolution (resampled first, whatever the
generator's size) and in fixed units (the manifest's scale: real training features have mean
per-dimension variance 1), and their weights are checked against the manifest's SHA-256 at load.

Pretrained weights cannot be downloaded on this project's machines. An extractor whose weights file
is absent from its local cache says so (``why_unavailable``) and is never constructed: nothing
triggers a download, and nothing is silently substituted. torchxrayvision and the Inception
networks are imported where they are used: torchxrayvision is slow to import (its datasets
module), and torch-fidelity's Inception is optional.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from cxrnb.data.tensors import as_unit_images
from cxrnb.errors import CxrnbError
from cxrnb.evaluation import ruler
from cxrnb.evaluation.classifier import Classifier, resize_to
from cxrnb.runtime import pick_device

XRV_WEIGHTS = "densenet121-res224-all"            # trained on NIH, PadChest, CheXpert, MIMIC, ...
TV_INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"            # torchvision IMAGENET1K_V1
FID_INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's TF-FID port



class FeatureExtractor:
    """A feature space: ``extractor(images) -> (N, D)`` float32 on the CPU, computed in batches."""

    name: str = "base"
    dim: int = 0

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 64):
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.why_unavailable: str | None = None   # set by subclasses whose weights are missing

    @property
    def available(self) -> bool:
        return self.why_unavailable is None

    def status(self) -> str:
        return "available" if self.available else f"unavailable: {self.why_unavailable}"

    def _forward(self, x: Tensor) -> Tensor:
        """One batch of (B, 1, H, W) images in [0, 1] on ``self.device`` -> (B, D)."""
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, images, progress: bool = False) -> Tensor:
        if not self.available:
            raise CxrnbError(f"feature space {self.name!r} is {self.status()}")
        out = []
        for i in tqdm(range(0, len(images), self.batch_size), desc=self.name, disable=not progress):
            batch = as_unit_images(images[i:i + self.batch_size]).to(self.device)
            out.append(self._forward(batch).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}: {self.status()})"


class ClassifierFeatures(FeatureExtractor):
    """Penultimate (global-average-pooled) features of a CXR classifier: the shipped ruler
    (``ruler.load_ruler``) in every run, any ``Classifier`` in tests; read at the classifier's
    resolution and in its feature units (``Classifier.embed``)."""

    name = "cxr-classifier"

    def __init__(self, classifier: Classifier | None, device: str | torch.device = "cpu",
                 batch_size: int = 256):
        super().__init__(device, batch_size)
        self.classifier = classifier
        if classifier is None:
            self.why_unavailable = "no classifier given (the shipped one: ruler.load_ruler())"
        else:
            self.dim = classifier.net.dim
            classifier.net.to(self.device).eval()

    def _forward(self, x: Tensor) -> Tensor:
        return self.classifier.embed(x)


class RandomInitFeatures(FeatureExtractor):
    """Every stage's pooled features (``CxrNet.stage_features``) of the shipped untrained ``CxrNet``.

    Fitted to nothing, so it cannot share the trained classifier's blind spots; the early stages
    keep the fine detail (blur, noise) that the last stage alone averages away. The weights are the
    seeded initialisation, shipped and checksummed (``ruler``), so a torch version that draws other
    numbers from the seed does not move the space. BatchNorm runs in eval mode with its initial
    statistics (identity), so features do not depend on the batch.
    """

    name = "random-init"

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 256,
                 weights_dir: str | Path = ruler.WEIGHTS_DIR):
        super().__init__(device, batch_size)
        self.net, entry = ruler.load_network(self.name, self.device, Path(weights_dir))
        self.dim, self.resolution, self.scale = entry["dim"], entry["resolution"], entry["scale"]

    def _forward(self, x: Tensor) -> Tensor:
        return self.net.stage_features(resize_to(x, self.resolution)) * self.scale


def xrv_weights_path(cache_dir: str | Path | None = None) -> Path:
    """Where torchxrayvision keeps the DenseNet weights (``~/.torchxrayvision/models_data/<file>``)."""
    import torchxrayvision as xrv

    filename = os.path.basename(xrv.models.model_urls[XRV_WEIGHTS]["weights_url"])
    return Path(cache_dir or xrv.utils.get_cache_dir()).expanduser() / filename


class XrvDenseNetFeatures(FeatureExtractor):
    """torchxrayvision DenseNet121 ("densenet121-res224-all") pooled features, D = 1024.

    xrv's convention: 1 channel, 224 px, grey levels scaled to [-1024, 1024]
    (``xrv.utils.normalize(img, 255)`` = (2 img/255 - 1) 1024); resizing uses the same
    bilinear antialiased interpolation as ``xrv.utils.fix_resolution``.
    """

    name = "xrv-densenet121"
    dim = 1024
    size = 224

    def __init__(self, cache_dir: str | Path | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 32):
        super().__init__(device, batch_size)
        self.weights_path = xrv_weights_path(cache_dir)
        self.model: nn.Module | None = None
        if not self.weights_path.is_file():
            self.why_unavailable = (f"weights file {self.weights_path} not found (it cannot be "
                                    f"downloaded here; copy it there to enable this feature space)")

    def _load(self) -> nn.Module:
        import torchxrayvision as xrv

        # The file exists (checked in __init__): xrv.models.get_weights finds it, downloads nothing.
        model = xrv.models.DenseNet(weights=XRV_WEIGHTS, cache_dir=str(self.weights_path.parent))
        return model.to(self.device).eval()

    def _forward(self, x: Tensor) -> Tensor:
        if self.model is None:
            self.model = self._load()
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        return self.model.features2((2 * x - 1) * 1024)


def hub_checkpoints(hub_dir: str | Path | None = None) -> Path:
    """torch.hub's weights folder (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(hub_dir or torch.hub.get_dir()) / "checkpoints"


def _torch_fidelity_installed() -> bool:
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        return False
    return True


class InceptionFeatures(FeatureExtractor):
    """Inception-v3 2048-d pool features, the feature space of the standard FID.

    Prefers the TF-FID weights that torchmetrics' FID uses (torch-fidelity's file, needs the
    ``torch-fidelity`` package); otherwise torchvision's ImageNet weights, which give a different
    (non-standard) FID. ``weights`` says which one was found. Grey images are repeated to 3 channels.
    """

    name = "inception-v3"
    dim = 2048
    size = 299

    def __init__(self, hub_dir: str | Path | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 32):
        super().__init__(device, batch_size)
        ckpt = hub_checkpoints(hub_dir)
        fid, tv = ckpt / FID_INCEPTION_FILE, ckpt / TV_INCEPTION_FILE
        self.model: nn.Module | None = None
        if fid.is_file() and _torch_fidelity_installed():
            self.weights, self.weights_path = "tf-fid (torch-fidelity)", fid
        elif tv.is_file():
            self.weights, self.weights_path = "torchvision IMAGENET1K_V1", tv
        else:
            self.weights, self.weights_path = None, None
            self.why_unavailable = (f"neither {fid} (with torch-fidelity installed) nor {tv} found "
                                    f"(they cannot be downloaded here)")

    def _load(self) -> nn.Module:
        if self.weights_path.name == FID_INCEPTION_FILE:
            from torchmetrics.image.fid import NoTrainInceptionV3

            model = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                       feature_extractor_weights_path=str(self.weights_path))
        else:
            from torchvision.models import inception_v3

            model = inception_v3(weights=None, aux_logits=True, init_weights=False)
            model.load_state_dict(torch.load(self.weights_path, map_location="cpu", weights_only=True))
            model.fc = nn.Identity()
        return model.to(self.device).eval()

    def _forward(self, x: Tensor) -> Tensor:
        if self.model is None:
            self.model = self._load()
        x = x.expand(-1, 3, -1, -1)
        if self.weights_path.name == FID_INCEPTION_FILE:       # takes uint8 and resizes itself
            return self.model((x * 255).round().to(torch.uint8))
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        # Google's weights expect [-1, 1], what transform_input makes of ImageNet-normalised input.
        return self.model(2 * x - 1)


def available_extractors(device: str | torch.device = "cpu", xrv_cache_dir: str | Path | None = None,
                         hub_dir: str | Path | None = None) -> list[FeatureExtractor]:
    """Every feature space with its status; callers use the available ones and report the rest.
    The two shipped spaces always exist: a missing or altered weights file is an error, not a
    space quietly left out."""
    return [ClassifierFeatures(ruler.load_ruler(device), device=device),
            RandomInitFeatures(device=device),
            XrvDenseNetFeatures(xrv_cache_dir, device=device),
            InceptionFeatures(hub_dir, device=device)]
