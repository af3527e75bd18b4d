"""The `focsam-onnx` command line: glue only; each command calls one library function."""

from __future__ import annotations

import logging

import typer

app = typer.Typer(
    help="FocSAM interactive segmentation on CPU: export ONNX graphs, segment, evaluate, bench.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages.")):
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    app()
