"""t2i: train, sample and evaluate text-to-image GANs (AttnGAN, StackGAN, StackGAN++, GAN-INT-CLS)."""

__version__ = "0.1.0"
