"""LightningDataModules and data sets: synthetic default data, real face formats, pair sampling."""
from xcos_lightning.datamodules.face_data import AlternatingOrder, FaceDataModule, FaceTrainPairs, open_train_set
from xcos_lightning.datamodules.synthetic import SyntheticFacesDataModule

__all__ = ["AlternatingOrder", "FaceDataModule", "FaceTrainPairs", "SyntheticFacesDataModule", "open_train_set"]
