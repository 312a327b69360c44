"""Trunk arguments shared by the benchmark scripts."""
from __future__ import annotations


def trunk_kwargs(trunk: str, width: float) -> dict:
    """``--width`` as the trunk's own width argument (MobileFaceNet: multiplier; IResNet: stem channels;
    tiny: output channels, 32 at width 1)."""
    if trunk == "mobilefacenet":
        return {"width_mult": width}
    if trunk.startswith("iresnet"):
        return {"width": round(64 * width)}
    if trunk == "tiny":
        return {"channels": max(4, round(32 * width))}
    return {}
