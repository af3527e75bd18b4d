"""A CVAT interactor function (nuclio) on the FocSAM engine: `function.yaml` and `main.py` are
the function's folder as `nuctl deploy` takes it; `interactor.py` holds the protocol."""
