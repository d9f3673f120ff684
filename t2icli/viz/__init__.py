"""Pictures, the only place they are drawn: image grids with captions, attention overlays, uint8 conversion."""

from t2icli.viz.grid import save_image_grid, to_uint8, wrap_text

__all__ = ["save_image_grid", "to_uint8", "wrap_text"]
