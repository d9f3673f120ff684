"""Pictures: image grids with captions (snapshots of generators) and helpers to turn tensors into uint8 images."""

from t2icli.viz.grid import save_image_grid, to_uint8, wrap_text

__all__ = ["save_image_grid", "to_uint8", "wrap_text"]
