"""The findings sentences say what the table supports, and nothing else."""

import pandas as pd

from cxrnb.report.sentences import best_non_collapsed, collapse_findings


def table(changes=None):
    rows = pd.DataFrame([
        dict(preset="VAE-beta1", loss="paper", beta=1.0, effective_beta=58293.0, kl=0.0, active_units=0,
             test_mse=0.109, mean_image_mse=0.035, collapsed=True, sample_ms_ssim=0.80, real_ms_ssim=0.43,
             parameters=100, iterations=20),
        dict(preset="VAE-beta0.002", loss="paper", beta=0.002, effective_beta=116.6, kl=0.2, active_units=0,
             test_mse=0.118, mean_image_mse=0.035, collapsed=True, sample_ms_ssim=0.84, real_ms_ssim=0.43,
             parameters=100, iterations=250),
        dict(preset="VAE-elbo-beta1", loss="elbo", beta=1.0, effective_beta=1.0, kl=94.6, active_units=1018,
             test_mse=0.0194, mean_image_mse=0.035, collapsed=False, sample_ms_ssim=0.72, real_ms_ssim=0.43,
             parameters=100, iterations=250),
    ])
    for (preset, column), value in (changes or {}).items():
        rows.loc[rows.preset == preset, column] = value
    return rows


def test_the_loss_is_blamed_only_through_an_equal_length_twin():
    text = collapse_findings(table())
    assert "Collapsed: VAE-beta1, VAE-beta0.002. Not collapsed: VAE-elbo-beta1." in text
    assert "VAE-beta0.002 trained as long as VAE-elbo-beta1 (250 iterations)" in text
    assert "effective β ≈ 117 against 1" in text and "carries 0.2 nats per image against 94.6" in text
    assert "reconstructions are 237% worse than the mean image against 45% better than" in text
    assert "the loss scaling, not the Gaussian prior, decides" in text
    assert "Caveat: VAE-beta1 trained fewer iterations than VAE-elbo-beta1 (20 or fewer against 250)" in text

    shorter = collapse_findings(table({("VAE-beta0.002", "iterations"): 100}))
    assert "trained as long as" not in shorter and "not the Gaussian prior" not in shorter
    other_net = collapse_findings(table({("VAE-beta0.002", "parameters"): 99}))
    assert "not the Gaussian prior" not in other_net


def test_a_twin_that_keeps_as_much_information_is_not_blamed_on_the_loss():
    close = collapse_findings(table({("VAE-beta0.002", "kl"): 50.0, ("VAE-beta0.002", "test_mse"): 0.02,
                                     ("VAE-beta0.002", "collapsed"): False}))
    assert "Not collapsed: VAE-beta0.002, VAE-elbo-beta1." in close
    assert "trained as long as" in close and "not the Gaussian prior" not in close


def test_no_claim_when_every_elbo_run_collapsed():
    dead = collapse_findings(table({("VAE-elbo-beta1", "collapsed"): True}))
    assert "No ELBO run escaped collapse" in dead and "trained as long as" not in dead


def test_best_non_collapsed_is_the_lowest_error_that_did_not_collapse():
    assert best_non_collapsed(table()) == "VAE-elbo-beta1"
    assert best_non_collapsed(table({("VAE-elbo-beta1", "collapsed"): True})) is None
