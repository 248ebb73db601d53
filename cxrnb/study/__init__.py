"""The study's experiments in a few calls: train or reload a run, then read off what a notebook shows."""

from cxrnb.study.runs import *  # noqa: F401,F403
