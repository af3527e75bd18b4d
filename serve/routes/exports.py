"""The labels as a dataset, downloaded from the page: one zip per format."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from focsam_onnx.labels.convert import Format, convert_to_zip
from focsam_onnx.serve.routes import LabellerDep, errors

router = APIRouter(prefix="/api")
ZIP = {200: {"content": {"application/zip": {}}}}


@router.get("/export/{fmt}", response_class=Response,
            responses={**ZIP, **errors(409, 413, 422)})
async def export(labeller: LabellerDep, fmt: Format, images: bool = False):
    """Every saved object as COCO, YOLO segmentation, LabelMe or Pascal VOC (the same files
    as `focsam-onnx labels convert`), zipped; `images=true` adds the labelled images."""
    data = await labeller.run(convert_to_zip, labeller.store.out, fmt,
                              labeller.folder.root if images else None)
    return Response(data, media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="labels-{fmt}.zip"'})
