"""The labelling page and the server's health."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import FileResponse

from focsam_onnx.serve.routes import LabellerDep, errors

router = APIRouter()
INDEX = resources.files("focsam_onnx.serve") / "static" / "index.html"


@router.get("/", include_in_schema=False)
def page():
    return FileResponse(str(INDEX), headers={"Cache-Control": "no-cache"})


@router.get("/api/health", responses=errors())
def health(labeller: LabellerDep):
    """The model being served."""
    model = labeller.engine.model
    return {"ok": True, "variant": model.variant, "model_id": model.model_id,
            "refine_at": labeller.refine_at, "encoder_precision": model.encoder_precision,
            "click_precision": model.click_precision, "images": str(labeller.folder.root),
            "out": str(labeller.store.out), "classes": list(labeller.store.classes)}
