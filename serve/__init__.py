"""`focsam-onnx serve`: label images in the browser, on the engine (FastAPI; the `serve` extra)."""
