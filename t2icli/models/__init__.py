"""Networks: DAMSM text and image encoders, Inception-v3, the generators and discriminators of every model, and their exports (export.py)."""
