"""focsam-onnx: FocSAM interactive segmentation as three ONNX graphs and a numpy click engine."""

__version__ = "0.1.0"
