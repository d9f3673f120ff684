"""Networks: DAMSM text and image encoders, Inception-v3, the generators and discriminators of every model, their
exports (export.py), and parameter counts."""

__all__ = ["parameter_count"]


def parameter_count(module):
    """Number of parameters `module` computes with: every parameter except those of submodules that a module
    lists in its `unused_parameters` (dotted names relative to it, e.g. InceptionImageEncoder's AuxLogits and fc,
    kept only so ImageNet checkpoints load strictly). The count to compare with a reference network's."""
    skip = []
    for name, m in module.named_modules():
        for child in getattr(m, "unused_parameters", ()):
            skip.append(f"{name}.{child}." if name else f"{child}.")
    return sum(p.numel() for n, p in module.named_parameters() if not any(n.startswith(s) for s in skip))
