"""Face networks: backbones (registry), grid head, margin heads, xCos attention, teacher."""
# Importing the trunk modules runs their @register_trunk decorators.
from xcos_lightning.models import iresnet, mobilefacenet, timm_trunk, tiny  # noqa: F401
from xcos_lightning.models.backbone import GridBackbone, GridHead, create_backbone
from xcos_lightning.models.fusion import fast_model, fuse_conv_bn, inference_copy
from xcos_lightning.models.margins import ArcFace, CosFace, MarginHead
from xcos_lightning.models.partial_fc import PartialArcFace, PartialCosFace, PartialFC
from xcos_lightning.models.registry import create_trunk, list_trunks, register_trunk
from xcos_lightning.models.teacher import Teacher
from xcos_lightning.models.xcos import CorrelationAttention, LearnedAttention, UniformAttention
from xcos_lightning.models.xcos_model import XCosModel

__all__ = [
    "ArcFace", "CorrelationAttention", "CosFace", "GridBackbone", "GridHead", "LearnedAttention", "MarginHead",
    "PartialArcFace", "PartialCosFace", "PartialFC", "Teacher", "UniformAttention", "XCosModel", "create_backbone",
    "create_trunk", "fast_model", "fuse_conv_bn", "inference_copy", "list_trunks", "register_trunk",
]
