"""cxrnb: a reproducible study of generative models (VAE, GMVAE, LSGAN) for chest X-rays."""

__version__ = "0.1.0"
