import argparse
import sys

from cxrnb.errors import CxrnbError

p = argparse.ArgumentParser(prog="python -m cxrnb.bench", description="side-by-side benchmarks")
p.add_argument("which", choices=("data", "train"))
p.add_argument("--root", help="CXR14 folder (default: $CXR14_ROOT)")
p.add_argument("--size", type=int, default=None)
p.add_argument("--device", default="auto")
p.add_argument("--compile", action="store_true", help="train: also time torch.compile (about 30 s per model)")
a = p.parse_args()
try:
    if a.which == "data":
        from cxrnb.bench.data import main
        main(root=a.root, size=a.size or 128)
    else:
        from cxrnb.bench.train import main
        main(device=a.device, size=a.size, compile=a.compile)
except CxrnbError as e:                 # bad input: one line, as the cxrnb command prints it
    sys.exit(f"python -m cxrnb.bench {a.which}: error: {e}")
