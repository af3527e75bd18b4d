"""Running the engine across machines (Ray); an optional extra: `pip install 'focsam-onnx[ray]'`."""
