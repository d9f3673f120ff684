"""Networks: the DAMSM text and image encoders, Inception-v3, and (later) generators and discriminators."""
