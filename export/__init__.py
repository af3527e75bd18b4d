"""torch -> ONNX: one wrapper per graph, export, parity gate, simplification, manifest."""
