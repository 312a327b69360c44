"""Post-hoc and intrinsic explanations of face-verification pairs, one call shape for every method.

    with create_explainer("corrrise", embed_fn=model, n_masks=500) as explainer:
        explanation = explainer(img_a, img_b)   # (B, 3, H, W) in [0, 1] -> PairExplanation
"""
from xcos_lightning.explain.base import Explainer, PairExplanation, SideMaps, gradients_enabled
from xcos_lightning.explain.corrrise import CorrRISE
from xcos_lightning.explain.gradcam import GradCAM, GradCAMPlusPlus, default_target_layer
from xcos_lightning.explain.inference import fast_embedding
from xcos_lightning.explain.masks import MaskSet
from xcos_lightning.explain.occlusion import Occlusion
from xcos_lightning.explain.random_map import RandomMap
from xcos_lightning.explain.registry import create_explainer, list_explainers, register_explainer
from xcos_lightning.explain.rise import RISE
from xcos_lightning.explain.sanity import parameter_randomisation_test, randomised_copy, recalibrate_batchnorm
from xcos_lightning.explain.srise import SRISE
from xcos_lightning.explain.xcos_intrinsic import XCosIntrinsic, XCosMapsModel
from xcos_lightning.explain.xssab import XSSAB

__all__ = [
    "CorrRISE", "Explainer", "GradCAM", "GradCAMPlusPlus", "MaskSet", "Occlusion", "PairExplanation", "RISE",
    "RandomMap", "SRISE", "SideMaps", "XCosIntrinsic", "XCosMapsModel", "XSSAB", "create_explainer",
    "default_target_layer", "fast_embedding", "gradients_enabled", "list_explainers",
    "parameter_randomisation_test", "randomised_copy", "recalibrate_batchnorm", "register_explainer",
]
