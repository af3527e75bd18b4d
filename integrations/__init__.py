"""FocSAM inside other labelling tools: a Label Studio ML backend and a CVAT interactor function.

Both are stateless on the tool's side (each request carries the image and every prompt of the
object); `common.predict` turns the ordered prompts into FocSAM's mask, so both give exactly
what a `ClickSession` gives for the same prompts in the same order.
"""
