"""Face detection, five-point landmarks and similarity alignment to the ArcFace template (and back)."""
from xcos_lightning.align.aligner import MAX_UPSCALE, ON_MISS, FaceAligner, Located, NoFaceError
from xcos_lightning.align.cache import LandmarkCache, content_key, default_cache_dir
from xcos_lightning.align.detectors import Face, create_detector, list_detectors, register_detector
from xcos_lightning.align.transform import (ARCFACE_TEMPLATE, alignment_matrix, apply, invert, scale_of,
                                            similarity_matrix, template, warp_back, warp_face)

__all__ = ["ARCFACE_TEMPLATE", "MAX_UPSCALE", "ON_MISS", "Face", "FaceAligner", "LandmarkCache", "Located",
           "NoFaceError", "alignment_matrix", "apply", "content_key", "create_detector", "default_cache_dir",
           "invert", "list_detectors", "register_detector", "scale_of", "similarity_matrix", "template", "warp_back",
           "warp_face"]
