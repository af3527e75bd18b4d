"""A prompt's answer as a stream of newline-delimited JSON events.

On the refine step an `interim` event (the coarse, unrefined mask) comes first, then `final`,
then `saved` once the mask and the record are on disk (killing the server loses at most a
prompt whose answer has not ended). Anything that fails before the first event is raised, so
the client gets its status code; a failure after it (e.g. the disk filled while saving) ends
the stream with an `error` event carrying the status it would have had.
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi.responses import StreamingResponse

from focsam_onnx.engine.click_session import ClickResult
from focsam_onnx.engine.prompts import Prompt, prompts_to_json
from focsam_onnx.serve.error_handlers import error_body
from focsam_onnx.serve.labeller import Labeller, ObjectSession
from focsam_onnx.serve.payloads import result_json
from focsam_onnx.serve.strokes import apply_strokes

_END = None


async def prompt_stream(labeller: Labeller, live: ObjectSession,
                        prompt: Prompt) -> StreamingResponse:
    """Add `prompt` to `live` on the click pool (in the session's order) and stream its events."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[dict | BaseException | None] = asyncio.Queue()
    start = time.perf_counter()
    background = labeller.encoding_in_background()

    def put(item: dict | BaseException | None) -> None:
        loop.call_soon_threadsafe(events.put_nowait, item)

    def event(kind: str, result: ClickResult, prompts: list[Prompt]) -> dict:
        return {"event": kind, "object_id": live.object_id, "category_id": live.category_id,
                "prompts": prompts_to_json(prompts),
                **result_json(result, apply_strokes(result.mask, live.strokes)),
                "background": background,
                "server_ms": round((time.perf_counter() - start) * 1000, 2)}

    def work() -> None:
        before = list(live.session.prompts)  # here: earlier clicks of the session are done
        try:
            result = labeller.add(live, prompt, lambda r: put(event("interim", r,
                                                                    [*before, prompt])))
            put(event("final", result, list(live.session.prompts)))
            version = labeller.save(live)  # after the answer: the mask shows without waiting
            put({"event": "saved", "object_id": live.object_id, "version": version})
        except Exception as err:
            put(err)
        finally:
            put(_END)

    labeller.clicks.submit(live.lane, work)
    first = await events.get()
    if isinstance(first, BaseException):
        raise first

    async def lines():
        item = first
        while item is not _END:
            if isinstance(item, BaseException):
                status, body = error_body(item, f"prompt of session {live.id[:6]}")
                item = {"event": "error", "status": status, **body}
            yield (json.dumps(item) + "\n").encode()
            item = await events.get()

    return StreamingResponse(lines(), media_type="application/x-ndjson")
