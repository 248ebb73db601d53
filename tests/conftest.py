"""Shared fixtures: the real CXR14 folder (when CXR14_ROOT is set) and a small phantom dataset."""

import os
from pathlib import Path

import pytest
import torch

REAL_ROOT = os.environ.get("CXR14_ROOT")


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The real CXR14 folder, or skip: these tests need images that cannot be downloaded here."""
    if not REAL_ROOT or not Path(REAL_ROOT).is_dir():
        pytest.skip("needs real CXR14 images: set CXR14_ROOT to a CXR14 folder "
                    "(e.g. ../shared/data/cxr14-subset)")
    return Path(REAL_ROOT)


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A 64-image synthetic dataset in the official CXR14 layout, written once per test session."""
    from cxrnb.data.phantom import write_phantom

    return write_phantom(tmp_path_factory.mktemp("phantom"), n=64, size=128, seed=0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and the suite runs two test processes at once."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def toy():
    """The latent explorer's toy linear model (tests/latent_toy.py); a module with its own ``toy`` overrides it."""
    from latent_toy import Toy

    return Toy()


@pytest.fixture(scope="module")
def images():
    """40 random 16x16 uint8 "training images" for the toy; a module with its own ``images`` overrides it."""
    from latent_toy import S

    return torch.randint(0, 256, (40, 1, S, S), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def pytest_terminal_summary(terminalreporter):
    """What the browser test saw (explorers, interactions, latencies), recorded with ``record_property``
    ("browser") so it reaches this summary from any xdist worker and shows in a passing run too."""
    lines = [text for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
             if report.when == "call" for key, text in report.user_properties if key == "browser"]
    if lines:
        terminalreporter.section("latent explorer in the browser")
        for text in lines:
            terminalreporter.write_line(text)
