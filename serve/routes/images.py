"""The image folder: listing, uploads, opening (encoding), pixels, saved objects, COCO."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from focsam_onnx.serve.images import UploadTooLarge
from focsam_onnx.serve.payloads import image_entry, object_json, status_json
from focsam_onnx.serve.routes import LabellerDep, errors

router = APIRouter(prefix="/api")
PNG = {200: {"content": {"image/png": {}}}}
UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "image/*": {"schema": {"type": "string", "format": "binary"}}}}}


@router.get("/images", responses=errors(409))
def list_images(labeller: LabellerDep):
    """The folder's images, with their saved object counts, and the class set."""
    return {"images": [image_entry(labeller, n) for n in labeller.folder.names()],
            "classes": list(labeller.store.classes),
            "background": labeller.background()}


@router.post("/images", openapi_extra=UPLOAD_BODY, responses=errors(400, 413, 422))
async def upload_image(labeller: LabellerDep, request: Request, filename: str = "upload.png"):
    """Add an image to the folder: the raw file as the body, `?filename=` its name."""
    limit = labeller.folder.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadTooLarge(f"upload of {declared} bytes is over the limit of {limit} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise UploadTooLarge(f"upload is over the limit of {limit} bytes")
    return {"image": labeller.folder.save_upload(filename, bytes(data))}


@router.post("/images/{name}/open", responses=errors(404))
def open_image(labeller: LabellerDep, name: str):
    """Start encoding the image (in the background) and pre-encoding the next ones."""
    return status_json(labeller, labeller.open(name))


class Progress(BaseModel):
    done: bool = Field(description="True: the image is labelled; false: not (yet).")


@router.post("/images/{name}/done", responses=errors(404, 409, 422))
def mark_done(labeller: LabellerDep, name: str, body: Progress):
    """Mark the image done, or not done (kept across restarts in the labels folder)."""
    labeller.folder.path(name)
    labeller.store.set_done(name, body.done)
    return image_entry(labeller, name)


@router.get("/images/{name}/status", responses=errors(404))
def image_status(labeller: LabellerDep, name: str):
    """Encoding state: encoding | ready | error, elapsed and expected seconds."""
    return status_json(labeller, labeller.status(name))


@router.get("/images/{name}/image", response_class=Response,
            responses={**PNG, **errors(400, 404, 413)})
def image_pixels(labeller: LabellerDep, name: str):
    """The pixels the engine segments (EXIF orientation applied), as PNG."""
    return Response(labeller.image_png(name), media_type="image/png")


@router.get("/images/{name}/objects", responses=errors(404, 409, 422))
def list_objects(labeller: LabellerDep, name: str, masks: bool = True):
    """The saved objects of the image (masks as base64 row-major bits). Each has a version,
    +1 per save, which the page polls to see other tabs' changes."""
    return {"image": name, "objects": [object_json(o, masks) for o in labeller.objects(name)]}


@router.get("/images/{name}/objects/{object_id}", responses=errors(404, 409, 422))
def get_object(labeller: LabellerDep, name: str, object_id: int, masks: bool = True):
    """One saved object (what a page fetches when another tab changed it)."""
    labeller.folder.path(name)
    return object_json(labeller.store.get(name, object_id), masks)


@router.get("/images/{name}/objects/{object_id}/mask.png", response_class=Response,
            responses={**PNG, **errors(404, 409, 422)})
def object_mask(labeller: LabellerDep, name: str, object_id: int):
    """A saved object's mask: PNG at the original size, 255 object, 0 background."""
    labeller.folder.path(name)
    saved = labeller.store.get(name, object_id)
    path = labeller.store.folder(name) / saved.mask_file
    return Response(path.read_bytes(), media_type="image/png")


class ObjectChange(BaseModel):
    category_id: int = Field(description="The object's new class (1-based).")


@router.patch("/images/{name}/objects/{object_id}", responses=errors(400, 404, 409, 422))
def change_object(labeller: LabellerDep, name: str, object_id: int, body: ObjectChange):
    """Change a saved object's class."""
    return object_json(labeller.set_category(name, object_id, body.category_id), False)


@router.post("/images/{name}/objects/{object_id}/restore", responses=errors(404, 409, 422))
def restore_object(labeller: LabellerDep, name: str, object_id: int):
    """Undo the deletion of an object: it comes back as it was, mask and prompts."""
    return object_json(labeller.restore_object(name, object_id))


@router.delete("/images/{name}/objects/{object_id}", responses=errors(404, 409, 422))
def delete_object(labeller: LabellerDep, name: str, object_id: int):
    """Delete a saved object (its PNG; its entry moves to annotations.json's
    `deleted_annotations`, from which `restore` brings it back)."""
    labeller.folder.path(name)
    labeller.delete_object(name, object_id)
    return {"deleted": object_id}


@router.get("/annotations", responses=errors(409))
def annotations(labeller: LabellerDep):
    """COCO-style annotations of the whole folder (RLE masks, plus the prompts)."""
    return labeller.store.coco(labeller.folder.names())
