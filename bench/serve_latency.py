"""HTTP round trip of a click on `focsam-onnx serve`: idle, and while a background encode runs.

Run `python bench/serve_latency.py --model DIR [--json out.json]`. It starts the server in a
subprocess on a free loopback port over a folder of synthetic images, opens the first one, waits
for the background pre-encoding to finish, then clicks sessions of `--clicks` clicks (the 2nd
runs the refiner) over one kept-alive connection, as a browser does: the *idle* clicks. Then it
opens an image whose successors are not encoded yet and clicks the first image again while the
background encoder works on them: the *background* clicks (each click event says whether the
encoder was busy when it arrived). Per click it records the client-observed time (request sent
to final event read), the server's time (request handled to final event built), the engine's
own click time and when the `saved` event came (mask and annotations.json on disk). It prints
p50/p90 and the targets: round trip <= engine click + 15 ms at p50, and a click during a
background encode <= 1.5x an idle click.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from focsam_onnx.bench import system_info

SCENE_HW = (480, 640)
OVERHEAD_TARGET_MS = 15.0
BACKGROUND_TARGET_RATIO = 1.5


def synthetic_images(folder: Path, count: int, seed: int = 0) -> list[str]:
    """`count` different 640x480 scenes (smooth noise and a few discs): real-sized decodes."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        image = cv2.resize(small, SCENE_HW[::-1], interpolation=cv2.INTER_CUBIC)
        for _ in range(4):
            centre = (int(rng.integers(60, 580)), int(rng.integers(60, 420)))
            cv2.circle(image, centre, int(rng.integers(20, 90)),
                       tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
        names.append(f"scene_{i:02d}.png")
        cv2.imwrite(str(folder / names[-1]), image)
    return names


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """One kept-alive HTTP/1.1 connection to the server, JSON in and out."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def request(self, method: str, path: str,
                body: dict | None = None) -> list[tuple[float, dict]]:
        """The response's JSON documents (one per line for NDJSON), each with the
        perf_counter time its line arrived."""
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        self.connection.request(method, path, payload, headers)
        response = self.connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: {response.status} {response.read()!r}")
        if response.getheader("content-type", "").startswith("application/x-ndjson"):
            documents = []
            while line := response.readline():
                if line.strip():
                    documents.append((time.perf_counter(), json.loads(line)))
            response.read()
            return documents
        return [(time.perf_counter(), json.loads(response.read()))]

    def get(self, path: str) -> dict:
        return self.request("GET", path)[0][1]

    def post(self, path: str, body: dict | None = None) -> dict:
        return self.request("POST", path, body if body is not None else {})[0][1]


def wait_until(predicate, timeout: float = 1800.0, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the server did not get there in time")
        time.sleep(every)


def open_ready(client: Client, name: str) -> dict:
    client.post(f"/api/images/{name}/open")
    status = {}

    def ready() -> bool:
        status.update(client.get(f"/api/images/{name}/status"))
        if status["state"] == "error":
            raise RuntimeError(status["error"])
        return status["state"] == "ready"

    wait_until(ready)
    return status


def background_idle(client: Client, name: str) -> bool:
    background = client.get(f"/api/images/{name}/status")["background"]
    return background["running"] is None and not background["pending"]


def click_plan(rng: np.random.Generator, clicks: int) -> list[tuple[int, int, bool]]:
    height, width = SCENE_HW
    return [(int(rng.integers(0, width)), int(rng.integers(0, height)), i == 0 or i % 2 == 0)
            for i in range(clicks)]


def run_session(client: Client, image: str, plan: list[tuple[int, int, bool]]) -> list[dict]:
    """One object's clicks; per click its times and whether the background encoder was busy.
    The object is deleted afterwards, so that every session saves into the same small file."""
    created = client.post("/api/sessions", {"image": image})
    session = created["session_id"]
    rows = []
    for index, (x, y, positive) in enumerate(plan):
        start = time.perf_counter()
        events = client.request("POST", f"/api/sessions/{session}/clicks",
                                {"x": x, "y": y, "positive": positive})
        arrived, final = next((t, e) for t, e in events if e["event"] == "final")
        if events[-1][1]["event"] != "saved":
            raise RuntimeError(f"click not saved: {events[-1][1]}")
        rows.append({"click": index, "refine": final["refiner_ran"],
                     "client_ms": (arrived - start) * 1000,
                     "saved_ms": (events[-1][0] - start) * 1000,
                     "server_ms": final["server_ms"], "engine_ms": final["engine_ms"],
                     "background": final["background"]})
    client.request("DELETE", f"/api/images/{image}/objects/{created['object_id']}")
    return rows


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": float(np.percentile(values, 50)),
            "p90": float(np.percentile(values, 90))}


def summarize(rows: list[dict]) -> dict:
    plain = [r for r in rows if not r["refine"]]  # the refine click is reported apart
    refine = [r for r in rows if r["refine"]]
    out = {}
    for name, group in (("click", plain), ("refine_click", refine)):
        out[name] = {key: percentiles([r[f"{key}_ms"] for r in group])
                     for key in ("client", "saved", "server", "engine")}
        out[name]["overhead"] = percentiles([r["client_ms"] - r["engine_ms"] for r in group])
    return out


@contextmanager
def serving(model: Path, images: Path, out: Path, options: list[str],
            log_path: Path) -> Iterator[int]:
    """`focsam-onnx serve` over `images` into `out` with `options`, on a free loopback port
    (yielded once it answers); stopped (SIGTERM, as Ctrl-C) at the end, its output in
    `log_path`."""
    port = free_port()
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "focsam_onnx.cli", "serve", "--model", str(model),
             "--images", str(images), "--out", str(out), "--port", str(port), *options],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_server(port, server, log_path)
            yield port
        finally:
            server.terminate()
            server.wait(timeout=60)


def measure(model: Path, threads: int, clicks: int, sessions: int, prefetch: int,
            workdir: Path) -> dict:
    images, labels = workdir / "images", workdir / "labels"
    images.mkdir()
    names = synthetic_images(images, 1 + 2 * prefetch)
    options = ["--threads", str(threads), "--prefetch", str(prefetch)]
    with serving(model, images, labels, options, workdir / "server.log") as port:
        client = Client(port)
        rng = np.random.default_rng(0)
        open_ready(client, names[0])
        wait_until(lambda: background_idle(client, names[0]))
        run_session(client, names[0], click_plan(rng, clicks))  # warm-up
        idle = [row for _ in range(sessions)
                for row in run_session(client, names[0], click_plan(rng, clicks))]
        open_ready(client, names[prefetch])  # cached; its successors are not: encoding starts
        busy: list[dict] = []
        while not background_idle(client, names[0]) and len(busy) < sessions * clicks * 4:
            busy += run_session(client, names[0], click_plan(rng, clicks))
        busy = [r for r in busy if r["background"]]
        encodes = client.get(f"/api/images/{names[0]}/status")["expected_s"]
    return {"idle": summarize(idle), "background": summarize(busy),
            "median_encode_s": encodes, "rows": {"idle": idle, "background": busy}}


def wait_for_server(port: int, server: subprocess.Popen, log: Path) -> None:
    def up() -> bool:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log.read_text()[-3000:]}")
        try:
            Client(port).get("/api/health")
            return True
        except OSError:
            return False

    wait_until(up, timeout=600, every=0.2)


def targets(report: dict) -> dict:
    idle, busy = report["idle"]["click"], report["background"]["click"]
    out = {"overhead_p50_ms": {"value": idle["overhead"].get("p50"),
                               "bound": OVERHEAD_TARGET_MS}}
    if busy["client"]["n"] and idle["client"]["n"]:
        out["background_vs_idle_p50"] = {
            "value": busy["client"]["p50"] / idle["client"]["p50"],
            "bound": BACKGROUND_TARGET_RATIO}
    for entry in out.values():
        entry["met"] = entry["value"] is not None and entry["value"] <= entry["bound"]
    return out


def markdown(report: dict) -> str:
    lines = ["| clicks | phase | n | client p50 | client p90 | server p50 | engine p50 | "
             "client − engine p50 | saved p50 |", "|---|---|---|---|---|---|---|---|---|"]
    for kind in ("click", "refine_click"):
        for phase in ("idle", "background"):
            s = report[phase][kind]
            if not s["client"]["n"]:
                continue
            lines.append(f"| {kind.replace('_', ' ')} | {phase} | {s['client']['n']} | "
                         f"{s['client']['p50']:.1f} | {s['client']['p90']:.1f} | "
                         f"{s['server']['p50']:.1f} | {s['engine']['p50']:.1f} | "
                         f"{s['overhead']['p50']:.1f} | {s['saved']['p50']:.1f} |")
    lines.append("")
    for name, t in report["targets"].items():
        value = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        lines.append(f"- {name}: {value} (target <= {t['bound']}) "
                     f"{'met' if t['met'] else 'NOT met'}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True,
                        help="Folder written by `focsam-onnx export`.")
    parser.add_argument("--threads", type=int, default=system_info.usable_cores())
    parser.add_argument("--clicks", type=int, default=5, help="Clicks per session.")
    parser.add_argument("--sessions", type=int, default=10, help="Idle sessions measured.")
    parser.add_argument("--prefetch", type=int, default=3,
                        help="Background images encoded while the busy clicks run.")
    parser.add_argument("--json", type=Path, help="Write the report (with every click) here.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="focsam-serve-bench-"))
    try:
        report = measure(args.model, args.threads, args.clicks, args.sessions,
                         max(1, args.prefetch), workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = {"machine": system_info.machine_info(args.threads),
              "settings": {k: str(v) for k, v in vars(args).items()}, **report}
    report["targets"] = targets(report)
    print(markdown(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
