"""numpy + onnxruntime click engine; never imports torch."""
