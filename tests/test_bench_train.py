"""The training bench's FLOP count, against the count done by hand for a one-layer model."""

import torch
from torch import nn

from cxrnb.bench.train import step_flops
from cxrnb.models.base import GenerativeModel, InputSpec, adam
from cxrnb.training.loop import Stepper


class OneLayer(GenerativeModel):
    input_spec = InputSpec(size=4)

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 3)

    def optimizer(self, part="model", fused=True):
        return adam(self.parameters(), fused)

    def loss(self, x, y, part="model"):
        return {"loss": self.lin(x.flatten(1)).pow(2).mean()}


def test_step_flops_counts_forward_and_backward_matmuls():
    b = 5
    step = Stepper(OneLayer(), torch.device("cpu"))
    u8, y = torch.zeros(b, 1, 4, 4, dtype=torch.uint8), torch.zeros(b, 15)
    # forward x @ W.T: 2*b*16*3; backward dW = g.T @ x: 2*b*16*3 (no gradient for the input batch)
    assert step_flops(step, u8, y) == 2 * (2 * b * 16 * 3)


def test_the_compile_column_is_measured_only_when_asked():
    import torch

    from cxrnb.bench.train import variants

    cpu = torch.device("cpu")
    assert "optimised + torch.compile" not in variants(cpu)
    assert variants(cpu, compile=True)["optimised + torch.compile"] == {"compile": True}
    assert variants(cpu)["optimised"] == {}                 # the loop's own defaults, unchanged


def test_summary_names_the_families_that_reach_the_goal():
    import pandas as pd

    from cxrnb.bench.train import summary

    t = pd.DataFrame({"batch": [8, 8, 64, 64], "preset": ["A", "B", "A", "B"],
                      "speed-up": [1.2, 1.6, 1.5, 0.9]})
    assert summary(t) == ("Optimised over naive, batch 8: A 1.20x, B 1.60x; 1.5x reached by B; "
                          "batch 64: A 1.50x, B 0.90x; 1.5x reached by A.")
    assert summary(t, goal=2).endswith("2x reached by none.")


def test_timed_says_the_steps_of_each_batch():
    from cxrnb.bench.train import timed

    assert timed({8: 10, 64: 2}) == "10 steps at batch 8, 2 at batch 64"
