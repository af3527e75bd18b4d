# The README's first screen: `make demo` and `make test`, each setting itself up on a fresh clone.
# The environment is made by the README's install command, only when $(VENV) lacks it.
# Commands run as `python -m focsam_onnx.cli` (the same CLI as .venv/bin/focsam-onnx), so that
# VENV may name an environment made elsewhere.
VENV ?= .venv
CLI = $(VENV)/bin/python -m focsam_onnx.cli
EXAMPLE = examples/demo_scene_0037.png
PORT ?= 8000

$(VENV)/bin/focsam-onnx:
	python3 -m venv $(VENV) && $(VENV)/bin/pip install torch==2.13.0 -e ".[dev]"

# The labelling page on examples/ with the packaged demo model (exported into the cache on first
# use); prints its URL. Labels go to demo_labels/. Ctrl-C stops it.
demo: $(VENV)/bin/focsam-onnx
	$(CLI) serve --images examples --out demo_labels --port $(PORT)

# The same model without a browser: one click inside the example scene's object 1 (tests/test_demo.py).
demo-segment: $(VENV)/bin/focsam-onnx
	$(CLI) segment $(EXAMPLE) --clicks "161,288,+" --out mask.png --overlay overlay.png

test: $(VENV)/bin/focsam-onnx
	$(VENV)/bin/python -m pytest

.PHONY: demo demo-segment test
