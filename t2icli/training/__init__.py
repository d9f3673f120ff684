"""Training loops (DAMSM now; AttnGAN, StackGAN, GAN-INT-CLS later) and the run-folder/checkpoint machinery they share."""
