"""LightningDataModules and data sets: synthetic default data, real face formats, pair sampling.

The DataModules are imported on first use of their name here (PEP 562 ``__getattr__``): reading pair sets
(``xcos_lightning.datamodules.pair_set``, ``pairs_file``: ``explain.py verify``, ``pair``) must not import
Lightning and albumentations, which only the training DataModules need.
"""
from importlib import import_module

_EXPORTS = {"AlternatingOrder": "face_data", "FaceDataModule": "face_data", "FaceTrainPairs": "face_data",
            "open_train_set": "face_data", "SyntheticFacesDataModule": "synthetic"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
