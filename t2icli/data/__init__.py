"""Data: preparation of each source into a prepared-dataset folder, and the loader every trainer uses."""

from t2icli.data.format import DataError, load_meta

__all__ = ["DataError", "load_meta", "PreparedDataset", "make_loader", "collate", "EpochBatchSampler"]


def __getattr__(name):
    # The dataset pulls in torch; keep `import t2icli.data` cheap for the CLI.
    if name in ("PreparedDataset", "make_loader", "collate", "EpochBatchSampler"):
        from t2icli.data import dataset

        return getattr(dataset, name)
    raise AttributeError(name)
