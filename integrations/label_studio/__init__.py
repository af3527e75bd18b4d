"""A Label Studio ML backend on the FocSAM engine (`focsam-onnx label-studio`): smart keypoints
and rectangles in, a BrushLabels mask in Label Studio's RLE out."""
