"""LightningDataModules and data sets: synthetic default data, real face formats, pair sampling."""
from xcos_lightning.datamodules.synthetic import SyntheticFacesDataModule

__all__ = ["SyntheticFacesDataModule"]
