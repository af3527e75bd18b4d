"""The page as a person uses it: a real headless Chromium clicking on the canvas of a real server.

Playwright drives Debian's chromium (`/usr/bin/chromium`, installed by .ci/run); the server is
`focsam-onnx serve` in a subprocess on a free loopback port, always stopped by the test, serving
the packaged demo model, so the masks on the page (and in its screenshot) are real ones.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
WAIT_MS = 300_000  # a shared 2-core machine can be slow; nothing here asserts a time
SCREENSHOT = Path(os.environ.get("FOCSAM_SCREENSHOT_DIR", "/tmp")) / "focsam-serve-test.png"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} not found (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def server(serve_process, demo_model_dir, images_dir, tmp_path):
    server = serve_process(demo_model_dir, images_dir, tmp_path / "labels",
                           tmp_path / "server.log")
    server.start()
    return server


def click_pixel(page, x: int, y: int, size: tuple[int, int], button: str = "left") -> None:
    """Click image pixel (x, y): Chromium truncates event coordinates to whole CSS pixels, so
    aim at the first whole CSS pixel inside that image pixel."""
    box = page.evaluate("(() => { const r = pointsCanvas.getBoundingClientRect(); "
                        "return [r.left, r.top, r.width, r.height]; })()")
    sx, sy = box[2] / size[0], box[3] / size[1]
    assert sx >= 1 and sy >= 1, box  # shown at least at natural size, so every pixel is hit
    page.mouse.click(_whole_css_pixel(box[0], sx, x, size[0]),
                     _whole_css_pixel(box[1], sy, y, size[1]), button=button)


def _whole_css_pixel(start: float, scale: float, pixel: int, extent: int) -> int:
    """The first whole CSS coordinate that the page maps to image pixel `pixel`, as it does:
    floor((client - start) * extent / (scale * extent))."""
    client = math.ceil(start + pixel * scale)
    while math.floor((client - start) * extent / (scale * extent)) < pixel:
        client += 1
    return client


def finals(page) -> int:
    return page.evaluate("window.focsamEvents.filter(e => e.event === 'final').length")


def wait_for_event(page, kind: str, count: int) -> None:
    page.wait_for_function(f"window.focsamEvents.filter(e => e.event === '{kind}').length "
                           f">= {count}", timeout=WAIT_MS)


def saved(labels: Path, image: str) -> tuple[dict, dict[int, np.ndarray]]:
    coco = json.loads((labels / image / "annotations.json").read_text())
    masks = {a["id"]: cv2.imread(str(labels / image / a["mask_file"]), cv2.IMREAD_UNCHANGED)
             for a in coco["annotations"]}
    return coco, masks


def clicks_of(coco: dict, object_id: int) -> list[tuple[int, int, bool]]:
    (entry,) = [a for a in coco["annotations"] if a["id"] == object_id]
    return [(c["x"], c["y"], c["positive"]) for c in entry["prompts"]]


def test_label_in_the_browser(browser, server, images_dir, tmp_path, demo_engine_mask):
    labels, image = tmp_path / "labels", "c_rotated.jpg"  # EXIF-rotated: 240 wide, 320 high
    size = (240, 320)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(server.url)
    page.wait_for_selector('body[data-ready="a_shapes.png"]', timeout=WAIT_MS)
    page.keyboard.press("ArrowRight")
    page.keyboard.press("d")
    page.wait_for_selector(f'body[data-ready="{image}"]', timeout=WAIT_MS)
    (shown,) = page.evaluate(f"focsamEvents.filter(e => e.event === 'shown' && "
                             f"e.image === '{image}')")
    assert not shown["ready"] and shown["width"] > 100  # shown, fitted, before it took clicks
    natural = page.evaluate("[photo.naturalWidth, photo.naturalHeight]")
    assert tuple(natural) == size  # the page shows the pixels the engine segments

    first = [(120, 170, True), (60, 40, False)]
    click_pixel(page, *first[0][:2], size)
    wait_for_event(page, "final", 1)
    click_pixel(page, *first[1][:2], size, button="right")
    wait_for_event(page, "final", 2)
    events = page.evaluate("window.focsamEvents")
    assert [(e["event"], e["prompts"]) for e in events if e["event"] in ("interim", "final")] == [
        ("final", 1), ("interim", 2), ("final", 2)]  # the unrefined mask first, then refined
    wait_for_event(page, "saved", 2)
    events = [e for e in events if e["event"] in ("interim", "final")]
    assert not events[1]["decoded_on_refined"] and events[2]["decoded_on_refined"]
    coco, masks = saved(labels, image)
    assert clicks_of(coco, 1) == first
    np.testing.assert_array_equal(masks[1], demo_engine_mask(images_dir / image, first) * 255)

    click_pixel(page, 200, 250, size)
    wait_for_event(page, "saved", 3)
    assert clicks_of(saved(labels, image)[0], 1) == [*first, (200, 250, True)]
    page.keyboard.press("Control+z")
    wait_for_event(page, "undo", 1)
    coco, masks = saved(labels, image)
    assert clicks_of(coco, 1) == first
    np.testing.assert_array_equal(masks[1], demo_engine_mask(images_dir / image, first) * 255)

    page.keyboard.press("n")
    second = [(30, 290, True)]
    click_pixel(page, *second[0][:2], size)
    wait_for_event(page, "saved", 4)
    coco, masks = saved(labels, image)
    assert sorted(masks) == [1, 2] and clicks_of(coco, 2) == second
    np.testing.assert_array_equal(masks[2], demo_engine_mask(images_dir / image, second) * 255)
    assert page.locator("#objects li").count() == 2
    screenshot = tmp_path / "serve.png"
    page.screenshot(path=str(screenshot))
    shutil.copy(screenshot, SCREENSHOT)
    print(f"screenshot of the page: {SCREENSHOT}")

    page.reload()
    page.wait_for_selector(f'body[data-ready="{image}"]', timeout=WAIT_MS)
    assert page.locator("#objects li").count() == 2
    labels_before = (labels / image / "annotations.json").read_text()
    server.kill()
    server.start()
    page.reload()
    page.wait_for_selector(f'body[data-ready="{image}"]', timeout=WAIT_MS)
    texts = page.locator("#objects li .label").all_inner_texts()
    assert [t.split(" · ")[:2] for t in texts] == [["object 1", "2 clicks"],
                                                   ["object 2", "1 click"]]
    assert (labels / image / "annotations.json").read_text() == labels_before
    page.close()


def record(labels: Path, image: str, object_id: int) -> dict:
    coco = json.loads((labels / image / "annotations.json").read_text())
    (entry,) = [a for a in coco["annotations"] if a["id"] == object_id]
    return entry


def test_classes_and_a_server_restart_the_annotator_does_not_notice(browser, serve_process,
                                                                   demo_model_dir, images_dir,
                                                                   tmp_path):
    """Keys 1-9 and the searchable picker give objects their classes, changeable later; after
    a SIGKILL and a restart (without --labels: the set is read back from --out) the next click
    on the selected object is applied and saved with no action from the user."""
    labels, image, size = tmp_path / "labels", "a_shapes.png", (320, 240)
    server = serve_process(demo_model_dir, images_dir, labels, tmp_path / "server.log")
    server.argv += ["--labels", "cat,dog,bird"]
    server.start()
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(server.url)
    page.wait_for_selector(f'body[data-ready="{image}"]', timeout=WAIT_MS)
    assert page.locator("#classes kbd").all_inner_texts() == ["1", "2", "3"]
    assert page.locator("#classes li > span:last-child").all_inner_texts() == [
        "cat", "dog", "bird"]
    page.keyboard.press("2")
    click_pixel(page, 170, 125, size)
    wait_for_event(page, "saved", 1)
    assert record(labels, image, 1)["category_id"] == 2
    page.keyboard.press("n")
    page.keyboard.press("c")
    page.keyboard.type("bir")
    assert page.locator("#classes li > span:last-child").all_inner_texts() == ["bird"]
    page.keyboard.press("Enter")
    click_pixel(page, 60, 55, size)
    wait_for_event(page, "saved", 2)
    assert record(labels, image, 2)["category_id"] == 3
    other = browser.new_page(viewport={"width": 1400, "height": 900})  # a second tab
    other.goto(server.url)
    other.wait_for_selector(f'body[data-ready="{image}"]', timeout=WAIT_MS)
    before = record(labels, image, 1)
    page.locator("#objects li").first.click()  # select object 1, then make it a cat
    page.keyboard.press("1")
    wait_for_event(page, "class", 1)
    after = record(labels, image, 1)
    assert after["category_id"] == 1 and after["version"] == before["version"] + 1
    assert (labels / image / after["mask_file"]).exists()
    assert not (labels / image / before["mask_file"]).exists()
    other.wait_for_function("document.querySelector('#objects li .label')"
                            ".innerText.startsWith('cat 1')", timeout=WAIT_MS)
    other.close()
    texts = page.locator("#objects li .label").all_inner_texts()
    assert [t.split(" · ")[0] for t in texts] == ["cat 1", "bird 1"]
    assert (labels / "classes.txt").read_text() == "cat\ndog\nbird\n"
    first_clicks = record(labels, image, 1)["prompts"]

    server.kill()
    server.argv = server.argv[:-2]  # no --labels: the classes come from the labels folder
    server.start()
    click_pixel(page, 200, 150, size)  # no reload: the page re-opens the image and the object
    wait_for_event(page, "saved", 3)
    entry = record(labels, image, 1)
    assert entry["prompts"] == [*first_clicks, {"x": 200, "y": 150, "positive": True}]
    assert entry["category_id"] == 1
    events = page.evaluate("window.focsamEvents.map(e => e.event)")
    assert "recovered" in events and "error" not in events
    assert "session" not in page.inner_text("#message").lower()
    with urllib.request.urlopen(server.url + "api/images") as response:
        assert json.load(response)["classes"] == ["cat", "dog", "bird"]
    page.close()


def client_point(page, x: float, y: float, size: tuple[int, int]) -> tuple[float, float]:
    """The client coordinates of image point (x, y) (continuous: pixel i spans [i, i + 1))."""
    box = page.evaluate("(() => { const r = pointsCanvas.getBoundingClientRect(); "
                        "return [r.left, r.top, r.width, r.height]; })()")
    return box[0] + x * box[2] / size[0], box[1] + y * box[3] / size[1]


def test_box_then_click_and_clicks_at_3x_zoom_and_after_a_pan(browser, server, images_dir,
                                                              tmp_path, demo_engine):
    """A box dragged with the box tool, then a click, saves the engine's mask for [box, click];
    at 3x zoom and after a space + drag pan, clicks are recorded at the pixels clicked."""
    from focsam_onnx.engine.click_session import ClickSession
    from focsam_onnx.engine.image_io import load_image
    from focsam_onnx.engine.prompts import Box, Click

    labels, image, size = tmp_path / "labels", "a_shapes.png", (320, 240)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(server.url)
    page.wait_for_selector(f'body[data-ready="{image}"]', timeout=WAIT_MS)
    page.keyboard.press("b")
    page.mouse.move(*client_point(page, 120.5, 90.5, size))
    page.mouse.down()
    page.mouse.move(*client_point(page, 170.5, 120.5, size), steps=4)
    page.mouse.move(*client_point(page, 220.5, 160.5, size), steps=4)
    page.mouse.up()
    wait_for_event(page, "saved", 1)
    page.keyboard.press("b")
    click_pixel(page, 170, 125, size)
    wait_for_event(page, "saved", 2)
    entry = record(labels, image, 1)
    assert entry["prompts"] == [{"box": [120, 90, 221, 161]},
                                {"x": 170, "y": 125, "positive": True}]
    session = ClickSession(demo_engine,
                           demo_engine.open_image(load_image(images_dir / image)))
    session.add(Box(120, 90, 221, 161))
    expected = session.add(Click(170, 125)).mask
    np.testing.assert_array_equal(saved(labels, image)[1][1], expected * 255)

    page.keyboard.press("n")
    for _ in range(3):
        page.keyboard.press("+")
    zoom = page.evaluate("view.scale / view.fit")
    assert zoom >= 3, zoom
    click_pixel(page, 160, 120, size)
    wait_for_event(page, "saved", 3)
    before = client_point(page, 0, 0, size)
    page.keyboard.down(" ")
    page.mouse.move(700, 450)
    page.mouse.down()
    page.mouse.move(650, 425, steps=5)
    page.mouse.move(600, 400, steps=5)
    page.mouse.up()
    page.keyboard.up(" ")
    after = client_point(page, 0, 0, size)
    assert (after[0] - before[0], after[1] - before[1]) == pytest.approx((-100, -50))
    click_pixel(page, 205, 141, size)
    wait_for_event(page, "saved", 4)
    assert record(labels, image, 2)["prompts"] == [{"x": 160, "y": 120, "positive": True},
                                                   {"x": 205, "y": 141, "positive": True}]
    assert finals(page) == 4  # the pan sent nothing
    page.keyboard.press("0")
    assert page.evaluate("view.scale / view.fit") == 1
    page.close()


def drag(page, points: list[tuple[int, int]], size: tuple[int, int]) -> None:
    page.mouse.move(*client_point(page, points[0][0] + 0.5, points[0][1] + 0.5, size))
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(*client_point(page, x + 0.5, y + 0.5, size), steps=6)
    page.mouse.up()


def test_brush_and_eraser_strokes_change_the_saved_mask_and_undo(browser, server, images_dir,
                                                                 tmp_path, demo_engine_mask):
    """The eraser clears and the brush paints on the clicks' mask as drawn; the record keeps
    the strokes and its mask is the clicks' mask with them applied; undo removes a stroke."""
    from focsam_onnx.serve.strokes import Stroke, apply_strokes

    labels, image, size = tmp_path / "labels", "a_shapes.png", (320, 240)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(server.url)
    page.wait_for_selector(f'body[data-ready="{image}"]', timeout=WAIT_MS)
    click_pixel(page, 170, 125, size)
    wait_for_event(page, "saved", 1)
    clicks_mask = demo_engine_mask(images_dir / image, [(170, 125, True)])
    page.keyboard.press("e")
    drag(page, [(150, 125), (190, 125)], size)
    wait_for_event(page, "stroke", 1)
    page.keyboard.press("p")
    drag(page, [(20, 20), (60, 20), (60, 40)], size)
    wait_for_event(page, "stroke", 2)
    entry = record(labels, image, 1)
    strokes = tuple(Stroke.from_json(s) for s in entry["strokes"])
    assert [(s.erase, s.radius, s.points[0], s.points[-1]) for s in strokes] == [
        (True, 8, (150, 125), (190, 125)), (False, 8, (20, 20), (60, 40))]
    mask = saved(labels, image)[1][1] > 0
    np.testing.assert_array_equal(mask, apply_strokes(clicks_mask, strokes))
    assert not mask[125, 150:191].any() and not mask[117:134, 170].any()  # erased, radius 8
    assert mask[20, 20:61].all() and mask[20:41, 60].all()  # painted
    page.keyboard.press("Control+z")
    wait_for_event(page, "undo", 1)
    entry = record(labels, image, 1)
    assert len(entry["strokes"]) == 1
    np.testing.assert_array_equal(saved(labels, image)[1][1] > 0,
                                  apply_strokes(clicks_mask, strokes[:1]))
    page.close()


PAINTED = """(() => { const c = masksCanvas, d = c.getContext("2d").getImageData(0, 0, c.width,
c.height).data; let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; })()"""


def test_progress_hide_solo_and_a_deletion_undone(browser, server, tmp_path):
    """Per-image state and "n of N done" survive a restart; M marks done and moves on, G opens
    the next image not done, / filters; H hides and S solos an object; Delete then Shift+Z
    brings the object back as it was."""
    labels, image, size = tmp_path / "labels", "a_shapes.png", (320, 240)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(server.url)
    page.wait_for_selector(f'body[data-ready="{image}"]', timeout=WAIT_MS)
    assert page.inner_text("#progress") == "0 of 3 done"
    row = page.locator(f'#images li[data-name="{image}"]')
    assert row.get_attribute("data-state") == "new"
    click_pixel(page, 170, 125, size)
    wait_for_event(page, "saved", 1)
    assert row.get_attribute("data-state") == "in progress"
    page.keyboard.press("n")
    click_pixel(page, 60, 55, size)
    wait_for_event(page, "saved", 2)
    both = page.evaluate(PAINTED)
    page.keyboard.press("h")  # object 2 is the selected one
    assert page.locator("#objects li.hidden").count() == 1
    without_2 = page.evaluate(PAINTED)
    page.keyboard.press("h")
    page.keyboard.press("s")
    only_2 = page.evaluate(PAINTED)
    assert page.locator("#objects li.hidden").count() == 1  # object 1, while 2 is solo
    page.keyboard.press("s")
    assert page.evaluate(PAINTED) == both and page.locator("#objects li.hidden").count() == 0
    assert without_2 < both and 0 < only_2 < both

    _, masks = saved(labels, image)
    page.keyboard.press("Delete")
    wait_for_event(page, "deleted", 1)
    record_now = json.loads((labels / image / "annotations.json").read_text())
    assert [a["id"] for a in record_now["annotations"]] == [1]
    assert [a["id"] for a in record_now["deleted_annotations"]] == [2]
    page.keyboard.press("Shift+Z")
    wait_for_event(page, "restored", 1)
    _, restored = saved(labels, image)
    assert sorted(restored) == [1, 2]
    np.testing.assert_array_equal(restored[2], masks[2])
    assert page.locator("#objects li").count() == 2

    page.keyboard.press("m")  # done: on to the next image not done
    wait_for_event(page, "done", 1)
    page.wait_for_selector('body[data-ready="b_flipped.png"]', timeout=WAIT_MS)
    assert json.loads((labels / "progress.json").read_text())["done"] == [image]
    assert page.inner_text("#progress") == "1 of 3 done"
    assert row.get_attribute("data-state") == "done"
    page.keyboard.press("g")
    page.wait_for_selector('body[data-ready="c_rotated.jpg"]', timeout=WAIT_MS)
    page.keyboard.press("/")
    page.keyboard.type("flip")
    assert page.locator("#images li .name").all_inner_texts() == ["b_flipped.png"]

    server.kill()
    server.start()
    page.reload()
    page.wait_for_selector('body[data-ready="c_rotated.jpg"]', timeout=WAIT_MS)
    assert page.inner_text("#progress") == "1 of 3 done"
    assert page.locator(f'#images li[data-name="{image}"]').get_attribute("data-state") == "done"
    page.close()


ATTACKER_PAGE = """<!doctype html><html><body>
<form id="f" method="POST" enctype="text/plain" action="{target}api/images/a_shapes.png/open">
<input name="x" value="y"></form>
<script>
window.tries = Promise.allSettled([
  fetch("{target}api/images?filename=planted.png",
        {{method: "POST", mode: "no-cors", body: "not even an image",
          headers: {{"Content-Type": "text/plain"}}}}),
  fetch("{target}api/sessions", {{method: "POST", mode: "no-cors",
        body: JSON.stringify({{image: "a_shapes.png"}})}}),
]).then(() => document.getElementById("f").submit());
</script></body></html>"""


def test_a_page_of_another_origin_cannot_change_the_server(browser, server, images_dir,
                                                           tmp_path):
    """A page on another loopback port tries fetch and a form post; the server refuses both,
    and its own page keeps working."""
    import http.server
    import threading

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text(ATTACKER_PAGE.format(target=server.url))
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(tmp_path / "site"))
    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{attacker.server_address[1]}/index.html")
        page.wait_for_url("**/api/images/a_shapes.png/open", timeout=WAIT_MS)  # the form post
        page.wait_for_load_state(timeout=WAIT_MS)
        assert "may not change" in page.inner_text("body")  # answered 403
        page.close()
    finally:
        attacker.shutdown()
        attacker.server_close()
    assert not (images_dir / "planted.png").exists()
    with urllib.request.urlopen(server.url + "api/images") as response:
        assert all(i["name"] != "planted.png" for i in json.load(response)["images"])
    try:  # the form's open was refused: the image is not open
        urllib.request.urlopen(server.url + "api/images/a_shapes.png/status")
        raise AssertionError("a cross-origin form opened an image")
    except urllib.error.HTTPError as err:
        assert err.code == 404
    page = browser.new_page(viewport={"width": 1400, "height": 900})  # its own page works
    page.goto(server.url)
    page.wait_for_selector('body[data-ready="a_shapes.png"]', timeout=WAIT_MS)
    click_pixel(page, 170, 125, (320, 240))
    wait_for_event(page, "saved", 1)
    page.close()


def objects_shown(page) -> dict[int, str]:
    """The object list as the page shows it: id -> its label text."""
    return {int(li.get_attribute("data-object-id")): li.inner_text()
            for li in page.locator("#objects li").all()}


def test_two_tabs_on_one_image_see_each_others_changes(browser, server, tmp_path):
    """Created, changed and deleted objects show in the other tab without any action there
    (it polls every 0.7 s; nothing here asserts a time)."""
    size, labels = (320, 240), tmp_path / "labels"
    tabs = [browser.new_page(viewport={"width": 1400, "height": 900}) for _ in range(2)]
    for tab in tabs:
        tab.goto(server.url)
        tab.wait_for_selector('body[data-ready="a_shapes.png"]', timeout=WAIT_MS)
    a, b = tabs

    click_pixel(a, 170, 125, size)
    wait_for_event(a, "saved", 1)
    b.wait_for_function("document.querySelectorAll('#objects li').length === 1",
                        timeout=WAIT_MS)
    assert "1 click" in objects_shown(b)[1]
    assert b.evaluate("focsamEvents.filter(e => e.event === 'final').length") == 0

    b.locator('#objects li[data-object-id="1"] .label').click()  # B continues A's object
    click_pixel(b, 60, 55, size, button="right")
    wait_for_event(b, "saved", 1)
    a.wait_for_function("document.querySelector('#objects li[data-object-id=\"1\"]')"
                        ".innerText.includes('2 clicks')", timeout=WAIT_MS)
    coco, masks = saved(labels, "a_shapes.png")
    assert clicks_of(coco, 1) == [(170, 125, True), (60, 55, False)]
    crop = a.evaluate("(() => { const k = state.objects.get(1).crop, c = k.canvas;"
                      " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                      " const m = []; for (let i = 3; i < d.length; i += 4) m.push(d[i] ? 1 : 0);"
                      " return {x: k.x, y: k.y, w: c.width, h: c.height, m}; })()")
    shown = np.zeros((size[1], size[0]), bool)  # the page's crop (full resolution here)
    shown[crop["y"]:crop["y"] + crop["h"], crop["x"]:crop["x"] + crop["w"]] = np.array(
        crop["m"], bool).reshape(crop["h"], crop["w"])
    np.testing.assert_array_equal(shown, masks[1] > 0)  # A draws the mask B's click saved

    a.keyboard.press("Delete")  # A's selected object is 1
    b.wait_for_function("document.querySelectorAll('#objects li').length === 0",
                        timeout=WAIT_MS)
    assert "deleted elsewhere" in b.inner_text("#message")
    assert saved(labels, "a_shapes.png")[0]["annotations"] == []
    for tab in tabs:
        tab.close()
