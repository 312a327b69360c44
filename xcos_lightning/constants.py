"""Sizes every layer shares, defined once."""

FACE_SIZE = 112  # side of the ArcFace face template (112 x 112 crops): what a model takes unless it declares its size
GRID_SIZE = 7  # side of the xCos grid at FACE_SIZE: the trunks' last feature map, total stride 16
