"""File handling above ``models``: model SPECs, checkpoints of this framework, pretrained weight formats,
export (safetensors, TorchScript, ONNX)."""
