"""A team on one `focsam-onnx serve`: N simulated annotators clicking over HTTP on loopback.

Run `python bench/annotators.py --model DIR [--annotators 1,2,4,8,16] [--json out.json]`. For
each N it starts a server (a subprocess on a free loopback port, over a fresh folder of
synthetic images, with its own --out and --cache-dir; or uses `--url` as it is) and N
annotators, each on its own kept-alive connection. An annotator takes the next image nobody has
taken, opens it, and labels two or three objects: the first prompt right away (the time from
opening the image to its first mask), then a few clicks, a box on one object, with a think time
between prompts; then it moves on (the API has no "done" mark). It stops at `--duration`
seconds or after `--images-per-annotator` images, finishing the prompt in flight.

Reported per N: click p50/p90 (request sent to the `final` event), open-to-first-mask p50/p90
(all images, and each annotator's images after its first: those pre-encoding could prepare),
prompts per second, encodes per minute (cache entries written; own server only), errors, and
lost saves: every prompt whose `saved` event arrived must be in the object's record of
annotations.json at the end, in order. A table is printed, `--json` writes every figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from focsam_onnx.bench import system_info
from focsam_onnx.bench.serve_latency import (
    SCENE_HW,
    Client,
    percentiles,
    serving,
    synthetic_images,
)

DEFAULT_ANNOTATORS = (1, 2, 4, 8, 16)
POLL_S = 0.02  # how often an annotator asks whether its image is encoded


@dataclass
class Tally:
    """One annotator's figures; `acked` maps (image, object id) to the prompts the server said
    it saved, in order."""

    prompt_ms: list[tuple[str, float]] = field(default_factory=list)  # (kind, client ms)
    first_mask_s: list[float] = field(default_factory=list)  # per image, in order
    images: int = 0
    errors: list[str] = field(default_factory=list)
    acked: dict[tuple[str, int], list[dict]] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    think_s: float
    clicks: int  # per object
    deadline: float  # time.monotonic() after which no new prompt starts
    images_each: int


def prompt_plan(rng: np.random.Generator, clicks: int, with_box: bool) -> list[dict]:
    """An object's prompts as the API takes them: maybe a box, then clicks around a centre."""
    height, width = SCENE_HW
    cx, cy = int(rng.integers(60, width - 60)), int(rng.integers(60, height - 60))
    plan: list[dict] = []
    if with_box:
        plan.append({"box": [float(cx - 50), float(cy - 40), float(cx + 50), float(cy + 40)]})
    for i in range(clicks):
        x = int(np.clip(cx + rng.integers(-40, 41), 0, width - 1))
        y = int(np.clip(cy + rng.integers(-40, 41), 0, height - 1))
        plan.append({"x": x, "y": y, "positive": i % 3 != 2})
    return plan


def send(client: Client, session: str, prompt: dict) -> tuple[float, list[dict]]:
    """One prompt: (ms to the `final` event, every event)."""
    start = time.perf_counter()
    if "box" in prompt:
        x0, y0, x1, y1 = prompt["box"]
        events = client.request("POST", f"/api/sessions/{session}/box",
                                {"x0": x0, "y0": y0, "x1": x1, "y1": y1})
    else:
        events = client.request("POST", f"/api/sessions/{session}/clicks", prompt)
    final = next((t for t, e in events if e["event"] == "final"), None)
    return ((final - start) * 1000 if final is not None else float("nan"),
            [e for _, e in events])


def open_image(client: Client, name: str, deadline: float) -> bool:
    """Open `name` and wait until it is encoded; False if the deadline came first."""
    client.post(f"/api/images/{name}/open")
    while True:
        status = client.get(f"/api/images/{name}/status")
        if status["state"] == "ready":
            return True
        if status["state"] == "error":
            raise RuntimeError(f"{name}: {status['error']}")
        if time.monotonic() > deadline + 600:  # an encode that never ends is an error
            raise RuntimeError(f"{name} still encoding 600 s after the deadline")
        time.sleep(POLL_S)


def label_image(client: Client, name: str, rng: np.random.Generator, plan: Plan,
                tally: Tally) -> None:
    opened = time.perf_counter()
    open_image(client, name, plan.deadline)
    boxed = int(rng.integers(0, 3))
    for k in range(int(rng.integers(2, 4))):
        if k and time.monotonic() > plan.deadline:
            return
        created = client.post("/api/sessions", {"image": name})
        key = (name, created["object_id"])
        acked = tally.acked.setdefault(key, [])
        for i, prompt in enumerate(prompt_plan(rng, plan.clicks, k == boxed)):
            if (k or i) and time.monotonic() > plan.deadline:
                return
            if k or i:
                time.sleep(plan.think_s * rng.uniform(0.5, 1.5))
            ms, events = send(client, created["session_id"], prompt)
            if k == 0 and i == 0:
                tally.first_mask_s.append(time.perf_counter() - opened)
            if events[-1]["event"] != "saved":
                tally.errors.append(f"{name} object {key[1]}: {events[-1]}")
                continue
            tally.prompt_ms.append(("box" if "box" in prompt else "click", ms))
            acked.append(prompt)


def annotator(port: int, index: int, images: list[str], take, plan: Plan,
              tally: Tally) -> None:
    client = Client(port)
    rng = np.random.default_rng(index)
    while tally.images < plan.images_each and time.monotonic() < plan.deadline:
        position = next(take)
        if position >= len(images):
            return
        try:
            label_image(client, images[position], rng, plan, tally)
        except Exception as err:  # counted, and this annotator goes on with the next image
            tally.errors.append(f"{images[position]}: {type(err).__name__}: {err}")
            client = Client(port)  # the connection may be in any state
        tally.images += 1


def records(port: int, images: list[str], out: Path | None) -> dict[tuple[str, int], list]:
    """Every saved object's prompts: from annotations.json on disk when the folder is ours,
    else from the server's API."""
    found = {}
    for name in images:
        if out is not None:
            path = out / name / "annotations.json"
            entries = json.loads(path.read_text())["annotations"] if path.exists() else []
            found.update({(name, e["id"]): e["prompts"] for e in entries})
        else:
            objects = Client(port).get(f"/api/images/{name}/objects?masks=false")["objects"]
            found.update({(name, o["object_id"]): o["prompts"] for o in objects})
    return found


def lost_saves(acked: dict[tuple[str, int], list[dict]],
               saved: dict[tuple[str, int], list]) -> list[str]:
    """Acknowledged prompts missing from (or out of place in) the saved records."""
    lost = []
    for key, prompts in acked.items():
        record = saved.get(key, [])
        lost += [f"{key[0]} object {key[1]} prompt {i}: {p}" for i, p in enumerate(prompts)
                 if i >= len(record) or record[i] != p]
    return lost


def run_team(port: int, images: list[str], annotators: int, plan: Plan) -> tuple[list, float]:
    """N annotator threads on `images`; their tallies and the seconds they took."""
    take = count()  # next() on it is atomic under the GIL: each image goes to one annotator
    tallies = [Tally() for _ in range(annotators)]
    threads = [threading.Thread(target=annotator, args=(port, i, images, take, plan, tallies[i]),
                                daemon=True) for i in range(annotators)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tallies, time.perf_counter() - start


def summarize(annotators: int, tallies: list[Tally], seconds: float, lost: list[str],
              encodes: int | None) -> dict:
    clicks = [ms for t in tallies for kind, ms in t.prompt_ms if kind == "click"]
    boxes = [ms for t in tallies for kind, ms in t.prompt_ms if kind == "box"]
    first = [s * 1000 for t in tallies for s in t.first_mask_s]
    # An annotator's later images: the ones pre-encoding had the time to prepare.
    later = [s * 1000 for t in tallies for s in t.first_mask_s[1:]]
    errors = [e for t in tallies for e in t.errors]
    prompts = sum(len(t.prompt_ms) for t in tallies)
    return {"annotators": annotators, "seconds": seconds,
            "images": sum(t.images for t in tallies), "prompts": prompts,
            "click_ms": percentiles(clicks), "box_ms": percentiles(boxes),
            "first_mask_ms": percentiles(first), "next_image_first_mask_ms": percentiles(later),
            "prompts_per_s": prompts / seconds,
            "encodes": encodes,
            "encodes_per_min": None if encodes is None else encodes / seconds * 60,
            "errors": len(errors), "lost_saves": len(lost),
            "error_samples": errors[:10], "lost_samples": lost[:10]}


def measure(args: argparse.Namespace, annotators: int, workdir: Path) -> dict:
    images_needed = annotators * args.images_per_annotator
    plan = Plan(args.think, args.clicks, time.monotonic() + 1e9, args.images_per_annotator)
    if args.url is not None:
        port = urlsplit(args.url).port or 80
        names = Client(port).get("/api/images")["images"]
        names = [entry["name"] for entry in names][:images_needed]
        plan = Plan(plan.think_s, plan.clicks, time.monotonic() + args.duration, plan.images_each)
        tallies, seconds = run_team(port, names, annotators, plan)
        return summarize(annotators, tallies, seconds,
                         lost_saves(_acked(tallies), records(port, names, None)), None)
    run = workdir / f"n{annotators}"
    images, out, cache = run / "images", run / "labels", run / "cache"
    images.mkdir(parents=True)
    names = synthetic_images(images, images_needed + args.prefetch, seed=annotators)
    with serving(args.model, images, out, server_options(args, cache), run / "server.log") as port:
        plan = Plan(plan.think_s, plan.clicks, time.monotonic() + args.duration, plan.images_each)
        tallies, seconds = run_team(port, names, annotators, plan)
    # Read after the server stopped: what a restart would find.
    return summarize(annotators, tallies, seconds,
                     lost_saves(_acked(tallies), records(port, names, out)),
                     len(list(cache.glob("*.bin"))))


def _acked(tallies: list[Tally]) -> dict[tuple[str, int], list[dict]]:
    return {key: prompts for t in tallies for key, prompts in t.acked.items()}


def server_options(args: argparse.Namespace, cache: Path) -> list[str]:
    options = ["--cache-dir", str(cache), "--prefetch", str(args.prefetch)]
    for flag, value in (("--threads", args.threads), ("--click-workers", args.click_workers),
                        ("--click-threads", args.click_threads), ("--ray", args.ray),
                        ("--workers", args.ray_workers)):
        if value is not None:
            options += [flag, str(value)]
    return options


def markdown(rows: list[dict]) -> str:
    lines = ["| annotators | images | prompts | click p50 | click p90 | first mask p50 | "
             "first mask p90 | next image's p50 | next image's p90 | prompts/s | encodes/min | "
             "errors | lost saves |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
             "---:|---:|"]

    def ms(stats: dict, key: str) -> str:
        return f"{stats[key]:.0f} ms" if stats["n"] else "-"

    for r in rows:
        encodes = "-" if r["encodes_per_min"] is None else f"{r['encodes_per_min']:.1f}"
        lines.append(f"| {r['annotators']} | {r['images']} | {r['prompts']} | "
                     f"{ms(r['click_ms'], 'p50')} | {ms(r['click_ms'], 'p90')} | "
                     f"{ms(r['first_mask_ms'], 'p50')} | {ms(r['first_mask_ms'], 'p90')} | "
                     f"{ms(r['next_image_first_mask_ms'], 'p50')} | "
                     f"{ms(r['next_image_first_mask_ms'], 'p90')} | "
                     f"{r['prompts_per_s']:.1f} | {encodes} | {r['errors']} | "
                     f"{r['lost_saves']} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="Folder written by `focsam-onnx export`: "
                                                   "a server is started for each N.")
    source.add_argument("--url", help="A running server on this machine (http://127.0.0.1:"
                                      "PORT), labelling its images as they are.")
    parser.add_argument("--annotators", default=",".join(map(str, DEFAULT_ANNOTATORS)),
                        help="Comma-separated team sizes N.")
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds per N.")
    parser.add_argument("--images-per-annotator", type=int, default=4)
    parser.add_argument("--clicks", type=int, default=3, help="Clicks per object.")
    parser.add_argument("--think", type=float, default=1.0,
                        help="Mean seconds between an annotator's prompts.")
    parser.add_argument("--prefetch", type=int, default=3, help="The server's --prefetch.")
    parser.add_argument("--threads", type=int, help="The server's --threads.")
    parser.add_argument("--click-workers", type=int, help="The server's --click-workers.")
    parser.add_argument("--click-threads", type=int, help="The server's --click-threads.")
    parser.add_argument("--ray", help="The server's --ray (e.g. local).")
    parser.add_argument("--ray-workers", type=int, help="The server's --workers (Ray encoder "
                                                        "workers; default: the cluster's CPUs).")
    parser.add_argument("--json", type=Path, help="Write the report here.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(n) for n in args.annotators.split(",")]
    if min(sizes) < 1 or args.duration <= 0 or args.images_per_annotator < 1:
        raise SystemExit("annotators, --duration and --images-per-annotator must be >= 1")
    workdir = Path(tempfile.mkdtemp(prefix="focsam-annotators-"))
    try:
        rows = []
        for n in sizes:
            rows.append(measure(args, n, workdir))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = {"machine": system_info.machine_info(args.threads or system_info.usable_cores()),
              "settings": {k: None if v is None else str(v) for k, v in vars(args).items()},
              "rows": rows}
    print(markdown(rows))
    for row in rows:
        for sample in row["error_samples"] + row["lost_samples"]:
            print(f"N={row['annotators']}: {sample}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
