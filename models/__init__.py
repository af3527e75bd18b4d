"""PyTorch FocSAM, upstream-exact: encoder, prompt encoder, mask decoder, focus refiner."""
