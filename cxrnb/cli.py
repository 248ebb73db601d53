"""The `cxrnb` command: thin argument parsing over package functions (imported lazily, so
`cxrnb --help` is instant; only the profiles' names are read up front)."""

from __future__ import annotations

import argparse
import sys

from cxrnb.errors import CxrnbError
from cxrnb.paths import DISK_FULL_ERRNOS, disk_full_error
from cxrnb.profiles import PROFILES


def _data_commands(sub) -> None:
    s = sub.add_parser("prepare", help="build the preprocessed uint8 image cache")
    s.add_argument("--root", help="CXR14 folder (default: $CXR14_ROOT)")
    s.add_argument("--csv", help="label table (default: the one found in --root)")
    s.add_argument("--size", type=int, default=128)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--cache-dir", default="data/cache")
    s.add_argument("--on-missing", choices=("skip", "error"), default="skip",
                   help="what to do with table rows whose image is absent")

    s = sub.add_parser("download", help="fetch the official NIH CXR14 archives (resume + checksum)")
    s.add_argument("--parts", type=int, default=12, help="how many of images_001..012 to fetch")
    s.add_argument("--out", default="data/cxr14")
    s.add_argument("--base-url", default=None, help="mirror to fetch from (default: NIH box links)")

    s = sub.add_parser("phantom", help="write a synthetic chest-like dataset laid out like CXR14")
    s.add_argument("--out", default="data/phantom")
    s.add_argument("--n", type=int, default=512)
    s.add_argument("--size", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)


def _model_commands(sub) -> None:
    s = sub.add_parser("params", help="paper Table 5: parameter counts and time per epoch")
    s.add_argument("--device", default="auto")
    s.add_argument("--size", type=int, default=None, help="image size for the throughput run")
    s.add_argument("--steps", type=int, default=3, help="timed training steps per model")

    s = sub.add_parser("train", help="train one preset on the cached data")
    s.add_argument("preset", help="e.g. LSGAN, VAE-beta0.1, GMVAE-V8 (see `cxrnb presets`)")
    s.add_argument("--root", help="CXR14 folder (default: $CXR14_ROOT; 'phantom' for the phantom)")
    s.add_argument("--size", type=int, default=None)
    s.add_argument("--epochs", type=float, default=1.0)
    s.add_argument("--max-images", type=int, default=None)
    s.add_argument("--batch-size", type=int, default=64,
                   help="the paper's is 64; under torchrun the global batch, split over the processes")
    s.add_argument("--checkpoint-minutes", type=float, default=5.0,
                   help="checkpoint at least this often (Ctrl-C also checkpoints; rerun to resume)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.add_argument("--out", default="runs", help="runs folder; the run goes to OUT/PRESET-SIZEpx")
    s.add_argument("--restart", action="store_true",
                   help="start over from iteration 0: delete the run's checkpoint first (e.g. a corrupt one)")

    sub.add_parser("presets", help="list the model presets")

    s = sub.add_parser("ruler", help="the shipped feature networks: status, or --retrain them")
    s.add_argument("--retrain", action="store_true",
                   help="retrain every shipped network deterministically and rewrite its manifest")
    s.add_argument("--data-root", help="CXR14 folder to retrain on (default: $CXR14_ROOT)")


def _reproduce_command(sub) -> None:
    s = sub.add_parser("reproduce", help="run every notebook headless with papermill")
    s.add_argument("--profile", default="cpu", help=" | ".join(PROFILES))
    s.add_argument("--params", help="YAML file of parameters overriding the profile")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one parameter (repeatable), e.g. --set epochs=2")
    s.add_argument("--only", action="append", default=[], help="run only notebooks with this prefix")
    s.add_argument("--reports", default="reports")
    s.add_argument("--notebooks", default=None,
                   help="folder of the NN_name.ipynb notebooks (default: the checkout's notebooks/)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace reports that were made from other data (e.g. real images by the phantom)")

    s = sub.add_parser("compare", help="two reports folders side by side: same verdicts? FDs within spread?")
    s.add_argument("a", help="a reports folder written by `make reproduce`")
    s.add_argument("b", help="another one (e.g. the same commit on another machine)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cxrnb", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    _data_commands(sub)
    _model_commands(sub)
    _reproduce_command(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        _dispatch(args)
    except CxrnbError as e:
        print(f"cxrnb {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:                        # a write outside paths.atomic
        if e.errno not in DISK_FULL_ERRNOS:
            raise
        print(f"cxrnb {args.command}: error: {disk_full_error(e.filename)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        print(f"cxrnb {args.command}: interrupted" + (f": {e}" if str(e) else ""), file=sys.stderr)
        sys.exit(130)


def _forget_checkpoint(runs: str, preset: str, size: int | None) -> None:
    """`cxrnb train --restart`: delete the run's checkpoint, so training starts over from iteration 0
    (the way past a corrupt one; the fresh run then clears its old grids and history)."""
    from cxrnb.models.presets import PRESETS
    from cxrnb.study.runs import run_dir
    from cxrnb.training.checkpoint import CHECKPOINT
    if preset in PRESETS:                             # an unknown one is refused, with advice, by train_run
        (run_dir(runs, preset, PRESETS[preset].image_size if size is None else size) / CHECKPOINT).unlink(
            missing_ok=True)


def _dispatch(a: argparse.Namespace) -> None:
    if a.command == "prepare":
        from cxrnb.data.cache import prepare
        print(prepare(root=a.root, csv=a.csv, size=a.size, workers=a.workers,
                      cache_dir=a.cache_dir, on_missing=a.on_missing))
    elif a.command == "download":
        from cxrnb.data.download import download
        print(download(parts=a.parts, out=a.out, base_url=a.base_url))
    elif a.command == "phantom":
        from cxrnb.data.phantom import write_phantom
        print(write_phantom(a.out, n=a.n, size=a.size, seed=a.seed))
    elif a.command == "params":
        from cxrnb.bench.table5 import print_table5
        print_table5(device=a.device, size=a.size, steps=a.steps)
    elif a.command == "train":
        from cxrnb import runtime
        from cxrnb.study.runs import describe, train_run
        from cxrnb.training import distributed
        if a.restart:
            _forget_checkpoint(a.out, a.preset, a.size)
        with distributed.session(a.device):            # under torchrun: one process per GPU (or CPU share)
            run = train_run(a.preset, a.root, image_size=a.size, epochs=a.epochs, max_images=a.max_images,
                            batch_size=a.batch_size, seed=a.seed, device=a.device, runs_dir=a.out,
                            config={"checkpoint_minutes": a.checkpoint_minutes})
            if runtime.is_main():
                print(describe(run, a.device) + (f"\n  processes    {runtime.world_size()} (DDP)"
                                                 if runtime.world_size() > 1 else ""))
    elif a.command == "presets":
        from cxrnb.models.presets import PRESETS
        width = max(map(len, PRESETS))
        print("\n".join(f"{name:<{width}}  {p.description}" for name, p in PRESETS.items()))
    elif a.command == "ruler":
        _ruler(a)
    elif a.command == "reproduce":
        from cxrnb.reproduce import reproduce
        reproduce(profile=a.profile, params_file=a.params, overrides=a.set, only=a.only,
                  reports=a.reports, notebooks=a.notebooks, overwrite=a.overwrite)
    elif a.command == "compare":
        from cxrnb.report.compare import compare, render
        comparison = compare(a.a, a.b)
        print(render(comparison), end="")
        sys.exit(0 if comparison.agrees else 1)


def _ruler(a: argparse.Namespace) -> None:
    import os

    from cxrnb.evaluation import ruler
    if not a.retrain:
        print("\n".join(ruler.status()))
        return
    root = a.data_root or os.environ.get("CXR14_ROOT")
    if not root:
        raise CxrnbError("--retrain needs the real images: pass --data-root DIR or set CXR14_ROOT")
    print("\n".join(ruler.retrain(root)))
