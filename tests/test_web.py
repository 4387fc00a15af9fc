"""glide serve: the server's checks and outputs without a browser, then the page itself in headless
Chromium (Debian's /usr/bin/chromium driven by Playwright) against a server on a loopback port.

The browser tests skip, saying why, where gradio, Playwright or Chromium is missing; `.ci/run`
installs all three. With GLIDEKIT_SCREENSHOTS=DIR they also save a screenshot of each tab there
(`make screenshots` writes docs/img/web-*.png); GLIDEKIT_WEB_MODEL=NAME|PATH runs them on another
32 px model than the tiny random one (the bundled `shapes` for the docs).
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, PngImagePlugin

from glidekit.config import from_openai_options
from glidekit.errors import GlidekitError
from glidekit.images import pil_to_tensor, read_png_metadata, tensor_to_pils
from glidekit.io import save_checkpoint
from glidekit.web import Limits, WebServer

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("GLIDEKIT_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("GLIDEKIT_SCREENSHOTS")
STEPS = 20 if SHOTS else 4


def _tiny_checkpoint(folder: Path, name: str = "base") -> Path:
    v = torch.load(ROOT / "tests" / "vectors" / f"{name}.pt", weights_only=True)
    return save_checkpoint(folder / f"tiny-{name}.safetensors", v["state_dict"], from_openai_options(v["options"]),
                           kind=name)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _tiny_checkpoint(tmp_path_factory.mktemp("models"))


def picture(size: int = 32) -> Image.Image:
    """A circle and a square on a background whose every pixel differs from its neighbours'
    (so a shifted or resampled copy cannot pass for the original)."""
    y, x = np.mgrid[:size, :size]
    bg = np.stack([150 + 3 * x, 170 + 2 * y, 200 + (x + y) % 7 * 5], -1).clip(0, 255).astype(np.uint8)
    im = Image.fromarray(bg)
    d = ImageDraw.Draw(im)
    d.ellipse([size * 0.1, size * 0.1, size * 0.45, size * 0.45], fill=(220, 30, 30))
    d.rectangle([size * 0.55, size * 0.55, size * 0.9, size * 0.9], fill=(30, 60, 220))
    return im


# --------------------------------------------------------------------------------------------
# the server without a page


@pytest.fixture(scope="module")
def server(tiny):
    s = WebServer([str(tiny)], limits=Limits(max_steps=8, max_batch=2, max_side=64, max_extend=16, max_prompt_chars=20))
    yield s
    s.close()


def test_limits_and_bad_requests_are_one_line_errors(server, tiny):
    m = tiny.name
    cases = [
        (lambda: server.text_to_image(m, "x", steps=9), "steps must be between 1 and 8 on this server, got 9"),
        (lambda: server.text_to_image(m, "x", steps=2.5), "steps must be a whole number"),
        (lambda: server.text_to_image(m, "x", steps=2, batch=3), "batch must be between 1 and 2 on this server"),
        (lambda: server.text_to_image(m, "x" * 21, steps=2), "at most 20"),
        (lambda: server.text_to_image(m, "x", sampler="plms", steps=2), "unknown sampler"),
        (lambda: server.text_to_image(m, "x", steps=2, guidance=-1), "guidance must be"),
        (lambda: server.text_to_image(m, "x", steps=2, seed=-1), "seed must be between"),
        (lambda: server.text_to_image(str(tiny), "x", steps=2), "no model"),  # a path is not a model label
        (lambda: server.text_to_image("/etc/passwd", "x", steps=2), "no model"),
        (lambda: server.edit(m, Image.new("RGB", (65, 10)), "x"), "65x10 px; this server accepts images up to 64 px"),
        (lambda: server.edit(m, None, "x"), "upload an image first"),
        (lambda: server.edit(m, picture(), "x", strength=0, steps=2), "strength must be in (0, 1]"),
        (lambda: server.outpaint(m, picture(), "x", ["right"], 17, steps=2), "pixels to add must be between 1 and 16"),
        (lambda: server.outpaint(m, picture(), "x", [], 8, steps=2), "tick at least one direction"),
        (lambda: server.outpaint(m, picture(), "x", ["up"], 8, steps=2), "tick at least one direction"),
        (lambda: server.inpaint(m, picture(), [Image.new("RGBA", (32, 32))], "x", steps=2), "paint the region to change"),
        (lambda: server.inpaint(m, picture(), [Image.new("RGBA", (16, 16), (0, 0, 0, 255))], "x", steps=2), "painted layer is 16x16"),
    ]
    for call, message in cases:
        with pytest.raises(GlidekitError, match=re.escape(message)):
            call()


def test_without_gradio_the_page_says_how_to_get_it(monkeypatch):
    from glidekit.web import _import_gradio

    for var in ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_DISABLE_TELEMETRY", "DO_NOT_TRACK"):
        monkeypatch.delenv(var, raising=False)  # restored after the test
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    with pytest.raises(GlidekitError, match=re.escape("pip install 'glidekit[web]'")):
        _import_gradio()
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False" and os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1"


def test_limits_must_be_positive():
    with pytest.raises(GlidekitError, match="--max-steps must be > 0"):
        Limits(max_steps=0)


def test_text_to_image_pngs_are_remade_by_glide_sample_from_png(server, tiny, tmp_path, monkeypatch, capsys):
    from glidekit.cli import main

    paths = server.text_to_image(tiny.name, "a red circle", steps=3, guidance=2.0, seed=5, batch=2)
    assert [p.name for p in paths] == ["000-a-red-circle-s5.png", "001-a-red-circle-s6.png"]
    rec = read_png_metadata(paths[1])
    assert rec["command"] == "sample" and rec["prompt"] == "a red circle" and rec["seed"] == 6
    assert rec["model"] == tiny.name and rec["guidance"] == 2.0 and rec["sampler"]["steps"] == 3
    assert rec["model_sha256"] and "/" not in json.dumps(rec["model"])  # no server paths in the PNG
    monkeypatch.chdir(tiny.parent)  # the record names the model by its file name
    assert main(["sample", "--from-png", str(paths[1]), "--out", str(tmp_path), "--quiet"]) == 0
    again = Path(capsys.readouterr().out.split()[0])
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(paths[1])))


def test_text_to_image_with_an_upsampler_is_remade_by_glide_sample_from_png(tiny, tmp_path, monkeypatch, capsys):
    """The text-to-image tab's upsampler: offered from the served models, recorded in the PNG (name,
    hash, its sampler, back-projection) so that `glide sample --from-png` re-makes the image; a base
    model or an unknown label as the upsampler is one line."""
    from glidekit.cli import main

    up = _tiny_checkpoint(tiny.parent, "upsample")
    server = WebServer([str(tiny), str(up)], limits=Limits(max_steps=8, max_batch=2))
    try:
        assert server.labels("upsample")[0] == up.name and tiny.name not in server.labels("upsample")
        (plain,) = server.text_to_image(tiny.name, "a red circle", steps=3, seed=2)
        (path,) = server.text_to_image(tiny.name, "a red circle", steps=3, seed=2, upsampler=up.name)
        (projected,) = server.text_to_image(tiny.name, "a red circle", steps=3, seed=2, upsampler=up.name,
                                            back_projection=2)
        for call, message in [
            (lambda: server.text_to_image(tiny.name, "x", steps=2, upsampler=tiny.name),
             "is a base model; an upsampler must be an upsample model"),
            (lambda: server.text_to_image(tiny.name, "x", steps=2, upsampler="/etc/passwd"), "no model"),
            (lambda: server.text_to_image(up.name, "x", steps=2), "this tab takes base models"),
            (lambda: server.text_to_image(tiny.name, "x", steps=2, upsampler=up.name, back_projection=5),
             "back-projection iterations must be between 0 and 4"),
        ]:
            with pytest.raises(GlidekitError, match=re.escape(message)):
                call()
        rec = read_png_metadata(path)
        assert rec["upsampler"] == up.name and rec["upsampler_sha256"] and rec["back_project"] == 0
        assert rec["up_sampler"]["name"] == "dpm++2m" and read_png_metadata(projected)["back_project"] == 2
        assert read_png_metadata(plain)["upsampler"] == "none"
        images = [np.asarray(Image.open(p)) for p in (plain, path, projected)]
        assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[1], images[2])
        monkeypatch.chdir(tiny.parent)
        for made in (path, projected):
            assert main(["sample", "--from-png", str(made), "--out", str(tmp_path), "--quiet"]) == 0
            again = Path(capsys.readouterr().out.split()[0])
            assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(made)))
    finally:
        server.close()


def test_composed_prompts_on_the_page_match_glide_sample(server, tiny, tmp_path, monkeypatch, capsys):
    """'A AND B' from the Text to image tab is the same composition as `glide sample` (the PNG's
    record re-makes it pixel for pixel); the editing tabs refuse it with one line."""
    from glidekit.cli import main

    prompt = "a red AND a blue"  # this server takes 20 characters
    (path,) = server.text_to_image(tiny.name, prompt, steps=3, guidance=2.0, seed=4)
    (plain,) = server.text_to_image(tiny.name, "a red", steps=3, guidance=2.0, seed=4)
    assert not np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(plain)))
    monkeypatch.chdir(tiny.parent)
    assert main(["sample", "--from-png", str(path), "--out", str(tmp_path), "--quiet"]) == 0
    again = Path(capsys.readouterr().out.split()[0])
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(path)))
    with pytest.raises(GlidekitError, match="AND"):
        server.edit(tiny.name, Image.new("RGB", (32, 32)), prompt, steps=2)


def test_inpaint_resizes_like_the_cli_and_keeps_unpainted_pixels(server, tiny):
    image = picture(48)  # not the model's 32 px: image and painted region are resized to it
    layer = Image.new("RGBA", image.size)
    ImageDraw.Draw(layer).rectangle([6, 6, 17, 29], fill=(255, 0, 255, 255))
    paths, region = server.inpaint(tiny.name, image, [layer], "a hat", steps=2, seed=1)
    out = np.asarray(Image.open(paths[0]).convert("RGB"))
    src = np.asarray(tensor_to_pils(pil_to_tensor(image, 32))[0])
    repainted = np.asarray(Image.open(region)) > 127
    assert out.shape == (32, 32, 3) and repainted.shape == (32, 32)
    # the 48 px rectangle [6, 17] x [6, 29] covers 32 px pixels 4..11 x 4..19 at least partly
    ys, xs = np.nonzero(repainted)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (4, 11, 4, 19)
    assert np.array_equal(out[~repainted], src[~repainted])
    assert (out[repainted] != src[repainted]).any()
    assert read_png_metadata(paths[0])["command"] == "inpaint"


def test_outpaint_and_edit_sizes(server, tiny):
    (wide,) = server.outpaint(tiny.name, picture(), "sky", ["left", "top"], 8, steps=2)
    out = np.asarray(Image.open(wide))
    assert out.shape == (40, 40, 3)
    assert np.array_equal(out[8:, 8:], np.asarray(picture()))
    paths = server.edit(tiny.name, picture(), "a watercolour", strength=0.5, steps=2, batch=2)
    assert [Image.open(p).size for p in paths] == [(32, 32), (32, 32)]
    assert read_png_metadata(paths[0])["strength"] == 0.5


def test_one_generation_at_a_time_per_model(server, tiny):
    import threading

    order, statuses = [], []

    def slow(done, total):
        order.append(("first", done))
        time.sleep(0.05)

    first = threading.Thread(target=server.text_to_image, args=(tiny.name, "x"), kwargs={"steps": 4, "on_step": slow})
    first.start()
    while not order:
        time.sleep(0.01)
    server.text_to_image(tiny.name, "y", steps=2, on_step=lambda d, t: order.append(("second", d)),
                         on_status=statuses.append)
    first.join()
    assert [who for who, _ in order] == ["first"] * 4 + ["second"] * 2
    assert statuses == [f"waiting: another generation is using {tiny.name}"]


def test_serve_command_errors_are_one_line(tiny, tmp_path, capsys):
    from glidekit.cli import main

    up = _tiny_checkpoint(tmp_path, "upsample-inpaint")
    for argv, message in [
        (["--model", str(tmp_path / "missing.safetensors")], "missing.safetensors"),
        (["--model", str(up)], "the page serves base, base-inpaint and upsample models, not upsample-inpaint models"),
        (["--model", str(tiny), "--max-batch", "0"], "--max-batch must be > 0"),
        (["--model", str(tiny), "--port", "70000"], "--port must be between 1 and 65535"),
    ]:
        assert main(["serve", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("glide: error: ") and message in err and err.count("\n") == 1, err


# --------------------------------------------------------------------------------------------
# the page in a browser


def _missing(reason: str) -> None:
    """Skip, saying why; fail instead under GLIDEKIT_REQUIRE_BROWSER=1 (.ci/run), where it must run."""
    if os.environ.get("GLIDEKIT_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page_server(tiny, tmp_path_factory):
    """`glide serve` in a subprocess on a free loopback port, with a tiny upsampler besides the model:
    (url, model label, its folder, upsampler label)."""
    import importlib.util

    for module, need in (("gradio", "the web page needs gradio: pip install -e '.[web]'"),
                         ("playwright", "the browser tests need playwright: pip install -e '.[test]'")):
        if importlib.util.find_spec(module) is None:
            _missing(need)
    if not Path(CHROMIUM).is_file():
        _missing(f"the browser tests need Chromium at {CHROMIUM}: make chromium (apt-get install chromium)")
    model = os.environ.get("GLIDEKIT_WEB_MODEL", str(tiny))
    port = _free_port()
    cwd = tmp_path_factory.mktemp("serve")
    (cwd / "secret.txt").write_text("not for the page")
    up = _tiny_checkpoint(tmp_path_factory.mktemp("upsampler"), "upsample")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_TEMP_DIR": str(cwd / "gradio")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "glidekit", "serve", "--port", str(port), "--model", model, "--model", str(up), "--max-side", "64",
         "--max-steps", "50", "--max-upload-mb", "0.05"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            break
        except (urllib.error.URLError, OSError):
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"glide serve did not start:\n{proc.stdout.read()}")
            time.sleep(0.3)
    label = Path(model).name if Path(model).suffix else model
    yield url, label, cwd, up.name
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser(page_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, page_server):
    """A fresh page on the server; every request it makes must stay on the loopback address."""
    url = page_server[0]
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    requests = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.goto(url)
    pg.wait_for_selector("#sample-prompt")
    yield pg
    context.close()
    offsite = [u for u in requests if not u.startswith(("http://127.0.0.1:", "data:", "blob:"))]
    assert not offsite, f"the page reached outside this machine: {offsite}"


def _shot(pg, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        time.sleep(0.5)  # let images finish fading in
        pg.screenshot(path=str(Path(SHOTS) / f"web-{name}.png"), full_page=True)


def _set_number(pg, slider_id: str, value) -> None:
    box = pg.locator(f"#{slider_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def _outputs(pg, tab: str) -> list[Image.Image]:
    """The PNGs the tab offers for download, fetched as the browser would fetch them."""
    links = pg.locator(f"#{tab}-files a[download]")
    links.first.wait_for()
    out = []
    for i in range(links.count()):
        body = pg.request.get(links.nth(i).get_attribute("href")).body()
        im = Image.open(io.BytesIO(body))
        im.load()
        out.append(im)
    return out


def _upload(pg, elem: str, image: Image.Image, tmp_path: Path) -> None:
    path = tmp_path / f"{elem}.png"
    image.save(path)
    pg.locator(f"#{elem} input[type=file]").set_input_files(str(path))


def test_page_text_to_image(page, page_server):
    page.locator("#sample-prompt textarea").fill("a red circle above a blue square")
    _set_number(page, "sample-steps", STEPS)
    _set_number(page, "sample-batch", 2)
    page.click("#sample-run")
    images = _outputs(page, "sample")
    assert [im.size for im in images] == [(32, 32), (32, 32)]
    rec = json.loads(images[1].text["glidekit"])  # the download carries the generation record
    assert (rec["prompt"], rec["seed"], rec["sampler"]["steps"], rec["model"]) == (
        "a red circle above a blue square", 1, STEPS, page_server[1])
    assert page.locator("#sample-gallery img").count() >= 2
    _shot(page, "text-to-image")


def test_page_text_to_image_upsampled(page, page_server):
    from playwright.sync_api import expect

    up = page_server[3]
    page.locator("#sample-prompt textarea").fill("a red circle")
    _set_number(page, "sample-steps", STEPS)
    back = page.locator("#sample-back-projection input[type=number]")
    expect(back).to_be_disabled()  # no upsampler chosen: nothing to back-project
    page.locator("#sample-upsampler input").click()
    page.get_by_role("option", name=up).click()
    expect(back).to_be_enabled()
    _set_number(page, "sample-back-projection", 1)
    page.click("#sample-run")
    (image,) = _outputs(page, "sample")
    rec = json.loads(image.text["glidekit"])
    assert (rec["upsampler"], rec["back_project"], rec["model"]) == (up, 1, page_server[1])
    assert image.size == (32, 32)  # the tiny upsampler's size


def test_page_live_progress_and_queue(page, browser, page_server):
    # a second visitor, ready to ask the same model while the first generation runs
    other = browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        other.set_default_timeout(60_000)
        other.goto(page_server[0])
        other.locator("#sample-prompt textarea").fill("the next one")
        _set_number(other, "sample-steps", 2)
        page.locator("#sample-prompt textarea").fill("a slow one")
        _set_number(page, "sample-steps", 50)
        page.click("#sample-run")
        page.locator("#sample-gallery").get_by_text(re.compile(r"\d+/50 steps")).first.wait_for()
        other.click("#sample-run")
        # told that it waits (gradio's queue, or the model's turn), then served
        other.locator("#sample-gallery").get_by_text(re.compile(r"queue|waiting")).first.wait_for()
        assert len(_outputs(other, "sample")) == 1
    finally:
        other.close()
    assert len(_outputs(page, "sample")) == 1


def _editor_zoom(pg):
    return pg.locator("#inpaint-editor").get_by_text(re.compile(r"^\d+%$"))


def _editor_image_box(pg, size: int, zoom_before: str) -> tuple[float, float, float]:
    """Where the editor shows the uploaded image: (left, top, screen pixels per image pixel).
    The canvas centres the image at the zoom it shows (e.g. "900%"), which it sets on upload."""
    zoom = _editor_zoom(pg)
    deadline = time.time() + 20
    while zoom.inner_text() == zoom_before and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    scale = int(zoom.inner_text().rstrip("%")) / 100
    box = pg.locator("#inpaint-editor canvas").first.bounding_box()
    side = size * scale
    return box["x"] + (box["width"] - side) / 2, box["y"] + (box["height"] - side) / 2, scale


def test_page_inpaint_with_the_brush_keeps_unpainted_pixels(page, tmp_path):
    src = picture(32)
    page.get_by_role("tab", name="Inpaint").click()
    zoom_before = _editor_zoom(page).inner_text()
    _upload(page, "inpaint-editor", src, tmp_path)
    left, top, scale = _editor_image_box(page, 32, zoom_before)
    # the page shows the upload where we think it is: sample the screen at three pixels' centres
    shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    for x, y in [(3, 3), (9, 9), (25, 25)]:
        seen = np.asarray(shot.getpixel((round(left + (x + 0.5) * scale), round(top + (y + 0.5) * scale))), int)
        assert np.abs(seen - np.asarray(src.getpixel((x, y)), int)).max() <= 12, (x, y, seen)
    page.get_by_label("Brush", exact=True).first.click()
    row = 13.5  # a horizontal stroke from image x 11 to 21 along y 13.5
    page.mouse.move(left + 11 * scale, top + row * scale)
    page.mouse.down()
    page.mouse.move(left + 21 * scale, top + row * scale, steps=12)
    page.mouse.up()
    page.locator("#inpaint-prompt textarea").fill("a yellow star")
    _set_number(page, "inpaint-steps", STEPS)
    page.click("#inpaint-run")
    (out,) = _outputs(page, "inpaint")
    out = np.asarray(out.convert("RGB"))
    region = Image.open(io.BytesIO(page.request.get(page.locator("#inpaint-region img").get_attribute("src")).body()))
    repainted = np.asarray(region.convert("L")) > 127
    src = np.asarray(src)
    # the repainted region is the stroke: it covers the stroke's line and stays near it
    assert repainted[13, 11:22].all()
    ys, xs = np.nonzero(repainted)
    assert xs.min() >= 11 - 8 and xs.max() <= 21 + 8 and ys.min() >= 13 - 8 and ys.max() <= 14 + 8
    # every pixel outside it is exactly the upload; inside, the model painted
    assert np.array_equal(out[~repainted], src[~repainted])
    assert (out[repainted] != src[repainted]).any()
    assert json.loads(Image.open(io.BytesIO(page.request.get(
        page.locator("#inpaint-files a[download]").first.get_attribute("href")).body())).text["glidekit"])["mask"] == "painted"
    _shot(page, "inpaint")


def test_page_outpaint(page, tmp_path):
    page.get_by_role("tab", name="Outpaint").click()
    _upload(page, "outpaint-image", picture(32), tmp_path)
    page.locator("#outpaint-prompt textarea").fill("a wide beach")
    _set_number(page, "outpaint-pixels", 16)
    _set_number(page, "outpaint-steps", STEPS)
    page.click("#outpaint-run")
    (out,) = _outputs(page, "outpaint")
    assert out.size == (48, 32)  # 16 px added on the right
    assert np.array_equal(np.asarray(out.convert("RGB"))[:, :32], np.asarray(picture(32)))
    _shot(page, "outpaint")


def test_page_edit(page, tmp_path):
    page.get_by_role("tab", name="Edit").click()
    _upload(page, "edit-image", picture(32), tmp_path)
    page.locator("#edit-prompt textarea").fill("a blue circle above a red square")
    _set_number(page, "edit-steps", STEPS)
    page.click("#edit-run")
    (out,) = _outputs(page, "edit")
    assert out.size == (32, 32) and json.loads(out.text["glidekit"])["command"] == "edit"
    _shot(page, "edit")


def test_page_over_limit_requests_show_the_error(page, tmp_path):
    page.get_by_role("tab", name="Edit").click()
    _upload(page, "edit-image", picture(100), tmp_path)  # the server takes 64 px a side
    page.locator("#edit-prompt textarea").fill("too big")
    page.click("#edit-run")
    page.get_by_text("the image is 100x100 px; this server accepts images up to 64 px on a side").first.wait_for()
    _shot(page, "error")
    # an upload over the byte limit (50 KB here) is refused at upload time, with a message
    info = PngImagePlugin.PngInfo()
    info.add_text("padding", "x" * 80_000)
    path = tmp_path / "heavy.png"
    picture(32).save(path, pnginfo=info)
    page.get_by_role("tab", name="Outpaint").click()
    page.locator("#outpaint-image input[type=file]").set_input_files(str(path))
    page.get_by_text(re.compile(r"exceed the maximum allowed size .*heavy\.png")).first.wait_for()


def test_page_serves_no_files_from_the_machine(page_server):
    url, label, cwd, _ = page_server
    for target in ("/etc/passwd", str(cwd / "secret.txt"), "secret.txt"):
        try:
            status = urllib.request.urlopen(f"{url}gradio_api/file={target}", timeout=5).status
        except urllib.error.HTTPError as e:
            status = e.code
        assert status in (403, 404), (target, status)
    # nor takes a file path for an image: a request naming a file on the machine is refused
    picture(32).save(cwd / "local.png")
    call = f"{url}gradio_api/call/edit"
    for target in ("/etc/passwd", str(cwd / "local.png")):
        image = {"path": target, "meta": {"_type": "gradio.FileData"}}
        body = json.dumps({"data": [label, image, "x", 0.6, "dpm++2m", 2, 3, 0, 1]}).encode()
        req = urllib.request.Request(call, data=body, headers={"Content-Type": "application/json"})
        event = json.loads(urllib.request.urlopen(req, timeout=10).read())["event_id"]
        answer = urllib.request.urlopen(f"{call}/{event}", timeout=60).read().decode()
        assert answer.startswith("event: error") and "local.png" not in answer, answer
