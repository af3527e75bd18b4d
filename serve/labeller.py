"""The labelling state behind the web app: open images, object sessions, saving after each step.

One engine serves every tab and user, off the event loop. Clicks, undos and resets run on the
click pool (`click_pool.py`): several sessions' clicks at once on the engine's shared decoder
and refiner sessions, each session's in the order they came (its lane). Opening an image
encodes it on its own executor, one image at a time behind a lock that also guards the cache,
or with `ray` set sends it to the Ray encoder pool ahead of its pre-encodes (the server then
loads no encoder; `cluster/serve_encoder.py`); the rest (new sessions, uploads, the stateless
predict) runs on a small general executor. Each object session also has a lock, so that
deleting its object waits for a click in flight; session ids are unguessable.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import statistics
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from focsam_onnx.engine.click_session import (
    ClickResult,
    ClickSession,
    InterimCallback,
    RefineAt,
    resolve_refine_at,
)
from focsam_onnx.engine.focsam_engine import EncodedImage, FocSAMEngine
from focsam_onnx.engine.image_io import decode_image
from focsam_onnx.engine.loaded_model import CLICK_GRAPHS
from focsam_onnx.engine.prompts import Prompt
from focsam_onnx.engine.replay_cache import DEFAULT_BUDGET_BYTES, ReplayCache, Replayed
from focsam_onnx.errors import Busy, FocSAMError, InvalidInput, NotFound, Unavailable
from focsam_onnx.serve.annotations import AnnotationStore, SavedObject
from focsam_onnx.serve.click_pool import ClickPool, Lane, default_click_workers
from focsam_onnx.serve.encoder_queue import EncoderQueue
from focsam_onnx.serve.images import ImageFolder
from focsam_onnx.serve.scratch_cache import make_scratch_cache
from focsam_onnx.serve.strokes import Stroke, apply_strokes

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_SESSIONS = 256  # each holds up to a few embeddings-sized arrays
SESSION_IDLE_S = 600.0  # a session unused this long may make room for a new one
MAX_OPEN_IMAGES = 8
MAX_STATELESS_IMAGES = 32  # encoded images the predict endpoint keeps (4 MB of embeddings each)
ENGINE_WORKERS = 4  # new sessions, uploads and stateless predictions in flight at once


@dataclass(frozen=True)
class LabellerSettings:
    model: Path
    images: Path
    out: Path
    cache_dir: Path | None = None
    threads: int | None = None
    encoder_precision: str = "fp32"  # one the export offers (export --encoder-precision)
    click_precision: str = "fp32"  # decoder and refiner (export --click-precision)
    prefetch: int = 3  # images after the opened one to pre-encode; 0: none
    max_upload_bytes: int = 50 << 20
    replay_cache_bytes: int = DEFAULT_BUDGET_BYTES  # the predict endpoint's prefix cache
    refine_at: RefineAt = "upstream"
    click_workers: int | None = None  # clicks in flight at once (default: usable cores)
    click_threads: int | None = None  # intra-op threads of each click (default: `threads`)
    ray: str | None = None  # encode on a Ray pool: "local", "auto" or "HOST:PORT"
    ray_workers: int | None = None  # default: as many as the cluster's CPUs allow
    ray_worker_cpus: int = 1
    ray_worker_memory_bytes: int | None = None  # default: twice the encoder's weights + 0.5 GiB
    classes: tuple[str, ...] | None = None  # None: the labels folder's, or "object"


@dataclass
class OpenImage:
    """An image being encoded or ready for clicks."""

    name: str
    started: float = field(default_factory=time.monotonic)
    state: str = "encoding"  # encoding | ready | error
    error: str | None = None
    bgr: np.ndarray | None = None
    encoded: EncodedImage | None = None
    done: threading.Event = field(default_factory=threading.Event)
    png: bytes | None = None


@dataclass
class ObjectSession:
    id: str
    image: str
    object_id: int
    session: ClickSession
    lock: threading.Lock = field(default_factory=threading.Lock)
    lane: Lane = field(default_factory=Lane)  # its clicks, undos and resets, in order
    last_used: float = field(default_factory=time.monotonic)
    closed: bool = False
    category_id: int = 1  # the object's class, saved with each of its masks
    strokes: list[Stroke] = field(default_factory=list)  # touch-ups after the prompts

    def mask(self) -> np.ndarray | None:
        """The object's mask: its prompts' with its strokes applied; None with neither."""
        result = self.session.result
        if result is None and not self.strokes:
            return None
        geometry = self.session.image.geometry
        base = (result.mask if result is not None
                else np.zeros((geometry.height, geometry.width), bool))
        return apply_strokes(base, self.strokes)

    def check_open(self) -> None:
        if self.closed:
            raise NotFound(f"object {self.object_id} of {self.image!r} was deleted")


class Labeller:
    """Everything the HTTP layer calls; start() before use, close() at the end."""

    def __init__(self, settings: LabellerSettings):
        self.settings = settings
        self.folder = ImageFolder(settings.images, max_upload_bytes=settings.max_upload_bytes)
        self.store = AnnotationStore(settings.out, settings.classes)
        self._temp_cache = None
        cache_dir = settings.cache_dir
        if cache_dir is None and (settings.prefetch > 0 or settings.ray is not None):
            # Pre-encodes are handed over through a disk cache (and outlive the memory LRU).
            self._temp_cache = cache_dir = make_scratch_cache()
        graphs = ("decoder", "refiner") if settings.ray is not None else CLICK_GRAPHS
        self.engine = FocSAMEngine.open(settings.model, threads=settings.threads,
                                        cache_dir=cache_dir,
                                        encoder_precision=settings.encoder_precision,
                                        graphs=graphs, click_threads=settings.click_threads,
                                        click_precision=settings.click_precision)
        self.refine_at = resolve_refine_at(settings.refine_at, self.engine.model.has_refiner)
        self.executor = ThreadPoolExecutor(ENGINE_WORKERS, thread_name_prefix="engine")
        self.clicks = ClickPool(settings.click_workers or default_click_workers())
        self.pool = self._pool_encoder() if settings.ray is not None else None
        # Opened images wait here for their encode: one at a time on this machine, while a
        # pool takes as many as people open.
        self._encodes = ThreadPoolExecutor(1 if self.pool is None else MAX_SESSIONS,
                                           thread_name_prefix="encode")
        self.queue = (EncoderQueue(settings.model, cache_dir, self.engine.model.threads,
                                   settings.encoder_precision, self._record_encode)
                      if settings.prefetch > 0 and self.pool is None else None)
        self._encode_lock = threading.Lock()
        self._resume_lock = threading.Lock()
        self._lock = threading.Lock()  # the two tables below
        self._images: OrderedDict[str, OpenImage] = OrderedDict()
        self._dropped: set[str] = set()  # opened once, dropped to make room: re-opened on use
        self._sessions: OrderedDict[str, ObjectSession] = OrderedDict()
        self._encode_seconds: deque[float] = deque(maxlen=5)
        self.replays = ReplayCache(settings.replay_cache_bytes)
        self._stateless: OrderedDict[str, EncodedImage] = OrderedDict()  # by hash and by name

    def start(self) -> None:
        for encoder in (self.queue, self.pool):
            if encoder is not None:
                encoder.start()

    def run(self, function: Callable[..., T], *args) -> asyncio.Future[T]:
        """`function(*args)` on the general executor, awaitable from the event loop."""
        return asyncio.wrap_future(self.executor.submit(function, *args))

    def run_in_session(self, live: ObjectSession, function: Callable[..., T],
                       *args) -> asyncio.Future[T]:
        """`function(*args)` on the click pool, after the jobs already sent to `live`."""
        return asyncio.wrap_future(self.clicks.submit(live.lane, function, *args))

    def close(self) -> None:
        self.clicks.close()
        if self.pool is not None:
            self.pool.close()  # first: it answers the opened images still waiting
        self._encodes.shutdown(wait=True, cancel_futures=True)
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self.queue is not None:
            self.queue.close()
        if self._temp_cache is not None:
            shutil.rmtree(self._temp_cache, ignore_errors=True)

    # images

    def open(self, name: str) -> OpenImage:
        """Start encoding `name` unless it is open already; pre-encode the images after it."""
        path = self.folder.path(name)
        with self._lock:
            entry = self._images.get(name)
            if entry is None or entry.state == "error":
                entry = self._images[name] = OpenImage(name)
                self._encodes.submit(self._encode, entry, path)
            self._images.move_to_end(name)
            self._forget_old_images()
        background = self.queue or self.pool
        if background is not None:
            depth = self.settings.prefetch
            if self.pool is not None:  # as deep as the pool is wide
                depth = max(depth, self.pool.workers)
            names = self.folder.names()
            after = names[names.index(name) + 1:][:depth]
            background.prefetch([self.folder.root / n for n in after
                                 if self._prefetchable(self.folder.root / n)])
        return entry

    def status(self, name: str) -> OpenImage:
        self.folder.path(name)
        with self._lock:
            entry = self._images.get(name)
        if entry is None:
            raise NotFound(f"image {name!r} is not open; open it first")
        return entry

    def background(self) -> dict | None:
        """What the background encoder (or the Ray pool) is doing, for the page."""
        background = self.queue or self.pool
        return background.snapshot() if background is not None else None

    def queue_position(self, name: str) -> int | None:
        """Where an opened image's encode is on the Ray pool: 0 running, k the k-th waiting."""
        return self.pool.position(name) if self.pool is not None else None

    def expected_encode_seconds(self) -> float | None:
        return statistics.median(self._encode_seconds) if self._encode_seconds else None

    def image_png(self, name: str) -> bytes:
        """The engine's pixels of `name` (EXIF orientation applied) as PNG, for the page."""
        entry = self.status(name)
        entry.done.wait()
        if entry.bgr is None:
            raise InvalidInput(f"image {name!r} could not be read: {entry.error}")
        if entry.png is None:
            ok, png = cv2.imencode(".png", entry.bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            if not ok:
                raise RuntimeError(f"could not encode {name} as PNG")
            entry.png = png.tobytes()
        return entry.png

    def ready(self, name: str) -> OpenImage:
        """The opened image, ready for clicks. One that was dropped to make room for other
        people's images is opened again and waited for (its embeddings come back from the
        cache): with many annotators, someone else's opens must not fail this one's next
        request. An image never opened is still NotFound (open it first)."""
        try:
            entry = self.status(name)
        except NotFound:
            with self._lock:
                dropped = name in self._dropped
            if not dropped:
                raise
            entry = self.open(name)
            entry.done.wait()
        if entry.state == "error":
            raise InvalidInput(f"image {name!r} could not be encoded: {entry.error}")
        if entry.state != "ready":
            raise Unavailable(f"image {name!r} is still encoding; wait for it")
        return entry

    # objects and clicks

    def new_session(self, name: str, object_id: int | None = None,
                    category_id: int | None = None) -> ObjectSession:
        """A session on a new object of `name` (of class `category_id`, default the first), or
        on saved object `object_id` (keeping its class).

        A saved object has at most one session, shared by every tab and user that opens it,
        so two people's clicks on it queue in one history and none is lost; the first to open
        it replays its saved prompts (undo then works as before a restart).
        """
        entry = self.ready(name)
        encoded = entry.encoded
        if object_id is None:
            if category_id is not None:
                self.store.check_category(category_id)
            geometry = encoded.geometry
            object_id = self.store.new_object_id(name, geometry.height, geometry.width)
            return self._register(ObjectSession(
                secrets.token_urlsafe(18), name, object_id,
                ClickSession(self.engine, encoded, self.refine_at),
                category_id=category_id or 1))
        with self._resume_lock:  # one replay per object, however many open it at once
            live = self._live_session(name, object_id)
            if live is not None:
                return live
            saved = self.store.get(name, object_id)
            session = ClickSession(self.engine, encoded, saved.refine_at)
            session.replay(saved.prompts)
            return self._register(ObjectSession(secrets.token_urlsafe(18), name, object_id,
                                                session, category_id=saved.category_id,
                                                strokes=list(saved.strokes)))

    def _live_session(self, name: str, object_id: int) -> ObjectSession | None:
        with self._lock:
            for live in self._sessions.values():
                if live.image == name and live.object_id == object_id and not live.closed:
                    self._sessions.move_to_end(live.id)
                    live.last_used = time.monotonic()
                    return live
        return None

    def _register(self, live: ObjectSession) -> ObjectSession:
        with self._lock:
            self._make_room_for_a_session()
            self._sessions[live.id] = live
        return live

    def _make_room_for_a_session(self) -> None:
        """Drop idle sessions while the table is full; a live one is never evicted: when all
        are live, the new one is refused (429) rather than someone's work lost."""
        idle_since = time.monotonic() - SESSION_IDLE_S
        while len(self._sessions) >= MAX_SESSIONS:
            oldest = next(iter(self._sessions.values()))  # least recently used first
            if oldest.last_used > idle_since:
                raise Busy(f"{MAX_SESSIONS} object sessions are in use; close some tabs or "
                           f"retry once one has been idle for {SESSION_IDLE_S:.0f} s")
            self._sessions.popitem(last=False)

    def session(self, session_id: str) -> ObjectSession:
        with self._lock:
            live = self._sessions.get(session_id)
            if live is None:
                raise NotFound("unknown or expired session id; create a new session")
            self._sessions.move_to_end(session_id)
        live.last_used = time.monotonic()
        return live

    def add(self, live: ObjectSession, prompt: Prompt,
            on_interim: InterimCallback | None = None) -> ClickResult:
        """Add a click or a box and predict; `save(live)` then writes it (after the answer)."""
        with live.lock:
            live.check_open()
            return live.session.add(prompt, on_interim)

    def save(self, live: ObjectSession) -> int | None:
        """Write the object's current state (a later click's, if one came in meanwhile); its
        version, or None where nothing is saved (no mask, or the object was deleted)."""
        with live.lock:
            return None if live.closed else self._save(live)

    def add_stroke(self, live: ObjectSession, stroke: Stroke) -> None:
        """Paint or erase on the object's mask, after its prompts so far; saved at once."""
        with live.lock:
            live.check_open()
            live.strokes.append(replace(stroke, after_prompts=len(live.session.prompts)))
            self._save(live)

    def undo(self, live: ObjectSession) -> None:
        """Undo the object's last step: a stroke, or else a prompt."""
        with live.lock:
            live.check_open()
            prompts = len(live.session.prompts)
            if live.strokes and live.strokes[-1].after_prompts == prompts:
                live.strokes.pop()
            else:
                live.session.undo()
            self._save(live)

    def reset(self, live: ObjectSession) -> None:
        with live.lock:
            live.check_open()
            live.session.reset()
            live.strokes.clear()
            self._save(live)

    def objects(self, name: str) -> list[SavedObject]:
        self.folder.path(name)
        return self.store.objects(name)

    def set_category(self, name: str, object_id: int, category_id: int) -> SavedObject:
        """Change the class of a saved object, and of its live session's later saves."""
        self.folder.path(name)
        live = self._live_session(name, object_id)
        if live is None:
            return self.store.set_category(name, object_id, category_id)
        with live.lock:  # after a click in flight, whose save would write the old class
            saved = self.store.set_category(name, object_id, category_id)
            live.category_id = category_id
        return saved

    def restore_object(self, name: str, object_id: int) -> SavedObject:
        """Undo the deletion of `object_id` (a new session on it replays its prompts)."""
        self.folder.path(name)
        return self.store.restore(name, object_id)

    def delete_object(self, name: str, object_id: int) -> None:
        """Delete a saved object; sessions on it end (their next request gets a 404)."""
        self.store.get(name, object_id)
        with self._lock:
            for sid in [s.id for s in self._sessions.values()
                        if s.image == name and s.object_id == object_id]:
                live = self._sessions.pop(sid)
                with live.lock:  # after a click in flight, so that none saves after the delete
                    live.closed = True
        self.store.delete(name, object_id)

    # the stateless predict endpoint

    def add_image_bytes(self, data: bytes) -> EncodedImage:
        """Decode and encode an uploaded image for `predict`, which then names it by hash."""
        bgr = decode_image(data, "the uploaded image", self.folder.max_pixels)
        return self._remember(self._encode_now(bgr))

    def predict(self, image: str, prompts: list[Prompt], refine_at: RefineAt) -> Replayed:
        """The mask of `prompts` on `image` (an uploaded image's hash or a folder image's name),
        exactly as a session given the same prompts in order, from the replay cache."""
        encoded = self._stateless_image(image)
        return self.replays.replay(self.engine, encoded, prompts, refine_at)

    def _stateless_image(self, ref: str) -> EncodedImage:
        with self._lock:
            encoded = self._stateless.get(ref)
            if encoded is not None:
                self._stateless.move_to_end(ref)
                return encoded
        if ref not in self.folder.names():
            raise NotFound(f"no image with hash or name {ref!r}: upload it with POST "
                           "/api/predict/images (or name an image of GET /api/images)")
        encoded = self._encode_now(self.folder.load(ref))
        with self._lock:
            self._stateless[ref] = encoded
        return self._remember(encoded)

    def _encode_now(self, bgr: np.ndarray, path: Path | None = None) -> EncodedImage:
        """`bgr` encoded here or on the pool (the cache first), in front of any pre-encode."""
        waited = None
        if self.pool is not None:
            waited = self.pool.encode(bgr, path.name if path else "an upload", path)
        elif self.queue is not None and path is not None:
            self.queue.take_over(path)
        with self._encode_lock:
            encoded = self.engine.open_image(bgr)
        if waited is not None:  # the pool's encode, found in the cache it has just filled
            return replace(encoded, from_cache=False, seconds=waited)
        if not encoded.from_cache:
            self._encode_seconds.append(encoded.seconds)
        return encoded

    def _remember(self, encoded: EncodedImage) -> EncodedImage:
        with self._lock:
            self._stateless[encoded.image_hash] = encoded
            self._stateless.move_to_end(encoded.image_hash)
            while len(self._stateless) > MAX_STATELESS_IMAGES:
                self._stateless.popitem(last=False)
        return encoded

    def encoding_in_background(self) -> bool:
        background = self.queue or self.pool
        return background is not None and background.busy

    # internals

    def _save(self, live: ObjectSession) -> int | None:
        session, mask = live.session, live.mask()
        if mask is None:
            self.store.delete(live.image, live.object_id)
            return None
        iou = session.result.iou_prediction if session.result is not None else 0.0
        return self.store.save(live.image, live.object_id, mask, session.prompts, iou,
                               session.refine_at, self.engine.model.model_id, live.category_id,
                               tuple(live.strokes)).version

    def _encode(self, entry: OpenImage, path: Path) -> None:
        try:
            entry.bgr = self.folder.load(entry.name)
            entry.encoded = self._encode_now(entry.bgr, path)
            entry.state = "ready"
        except Exception as err:  # shown on the page; the server goes on
            if not isinstance(err, FocSAMError):
                log.exception("encoding %s failed", entry.name)
            entry.state, entry.error = "error", str(err)
        finally:
            entry.done.set()

    def _record_encode(self, path: Path | str, seconds: float) -> None:
        self._encode_seconds.append(seconds)

    def _pool_encoder(self):
        from focsam_onnx.cluster.serve_encoder import PoolEncoder

        if self.settings.encoder_precision != "fp32":
            raise InvalidInput("--ray encodes with the fp32 encoder only")
        model = self.engine.model

        def store(image_hash: str, embeddings: np.ndarray) -> None:
            with self._encode_lock:
                self.engine.cache.put(image_hash, model.model_id, model.encoder_precision,
                                      embeddings)

        def has(image_hash: str) -> bool:
            with self._encode_lock:
                return self.engine.cache.contains(image_hash, model.model_id,
                                                  model.encoder_precision)

        return PoolEncoder(self.settings.ray, self.settings.model, model.model_id, store, has,
                           self.settings.ray_workers, self.settings.ray_worker_cpus,
                           self.settings.ray_worker_memory_bytes, on_encoded=self._record_encode)

    def _prefetchable(self, path: Path) -> bool:
        try:
            self.folder.check(path)
        except FocSAMError:
            return False
        with self._lock:
            return path.name not in self._images

    def _forget_old_images(self) -> None:
        """Keep the pixels of the last few images; sessions keep their embeddings anyway."""
        while len(self._images) > MAX_OPEN_IMAGES:
            oldest = next(iter(self._images.values()))
            if oldest.state == "encoding":
                break
            self._images.popitem(last=False)
            self._dropped.add(oldest.name)
