"""The demo page (``asczoo demo``, ``asczoo publish --space``): what it computes, the page in a real
headless browser (Debian's chromium driven by Playwright), its API through gradio_client, and the
Space's ``app.py`` served from a pre-seeded Hub cache.

Without Gradio, Playwright or a chromium the page tests skip; CI sets ``ASCZOO_REQUIRE_BROWSER=1``,
which makes them fail instead.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import asczoo
from model_fixtures import seed_hub_cache, tiny_model

REQUIRED = os.environ.get("ASCZOO_REQUIRE_BROWSER") == "1"
#: seconds a server gets to import torch and Gradio and load the model
START_SECONDS = 90


def need(module: str):
    """Import ``module``, or skip (fail under ASCZOO_REQUIRE_BROWSER=1) when it is not installed."""
    try:
        return __import__(module)
    except ImportError as exc:
        if REQUIRED:
            raise
        pytest.skip(f"{module} is not installed ({exc}): pip install -e '.[test,demo]'")


def chromium() -> str:
    path = os.environ.get("ASCZOO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if REQUIRED:
            pytest.fail("no chromium on PATH (apt-get install chromium), and ASCZOO_REQUIRE_BROWSER=1")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    return path


def write_clip(path: Path, seconds: float, rate: int, channels: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.2 * np.sin(2 * np.pi * (300 + 200 * seed) * t)[:, None]
    sf.write(path, (tone + 0.05 * rng.standard_normal((t.size, channels))).astype("float32"), rate)
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny ATReSN-Net folder, a clip shorter than its 2-second window (at another rate, stereo) and a
    7-second recording (4 windows)."""
    root = tmp_path_factory.mktemp("demo")
    tiny_model().save_pretrained(root / "model")
    return {"model": root / "model", "clip": write_clip(root / "clip.wav", 1.5, 16000, 2, 0),
            "long": write_clip(root / "long.wav", 7.0, 8000, 1, 1), "root": root}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(command: list[str], port: int, log: Path, **kwargs) -> subprocess.Popen:
    """Start a page server and wait until it answers on ``port``."""
    out = open(log, "w")
    server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, **kwargs)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server ended with rc {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise AssertionError(f"no page on port {port} after {START_SECONDS} s:\n{log.read_text()}")


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture(scope="module")
def page_url(saved):
    """``asczoo demo MODEL --port P`` running, as a user starts it."""
    need("gradio")
    port = free_port()
    server = serve([sys.executable, "-m", "asczoo", "demo", str(saved["model"]), "--port", str(port)], port,
                   saved["root"] / "server.log")
    yield f"http://127.0.0.1:{port}/"
    stop(server)


def expected(saved, name: str):
    model = asczoo.from_pretrained(saved["model"])
    return model, model.predict(saved[name])


def test_demo_model_shows_what_predict_and_explain_give(saved, tmp_path):
    from asczoo.deploy.demo import DemoModel
    from asczoo.inference import timeline

    model, want = expected(saved, "clip")
    demo = DemoModel(model, workdir=tmp_path / "work")
    short = demo.classify(saved["clip"])
    assert short.label == want.label and short.windows == 1
    assert short.probabilities == pytest.approx(want.probabilities, abs=1e-6)
    assert short.summary == f"{want.label} ({want.probabilities[want.label]:.2f})"
    assert short.timeline_png is None and short.timeline_csv is None  # one window: no timeline
    assert short.explain_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    long = demo.classify(saved["long"])
    rows = timeline(model, saved["long"])
    assert long.windows == len(rows) == 4 and long.seconds == pytest.approx(7.0)
    assert long.label == model.predict(saved["long"]).label
    with open(long.timeline_csv, newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["start", "end", "label", *model.classes]
    assert [r[2] for r in table[1:]] == [r.labels[0] for r in rows]
    assert long.timeline_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    plain = DemoModel(tiny_model("resnet18-segments"), workdir=tmp_path / "plain")
    assert plain.classify(saved["clip"]).explain_png is None  # no relation blocks, no picture
    for _ in range(DemoModel.KEEP + 2):  # old requests' files are removed
        plain.classify(saved["clip"])
    assert len(list((tmp_path / "plain").iterdir())) == DemoModel.KEEP


def test_a_multi_label_model_shows_every_class_at_or_above_the_threshold(saved, tmp_path):
    from asczoo.deploy.demo import DemoModel
    from asczoo.inference import labels_above
    from asczoo.testing import TINY_OVERRIDES

    model = asczoo.create_model("atresn-net-resnet18", overrides={
        **TINY_OVERRIDES, "classes": ["birds", "rain", "traffic"], "num_classes": 3, "task": "multi-label"})
    want = model.eval().predict(saved["long"])
    threshold = sorted(want.probabilities.values())[1]  # two of the three classes reach it
    result = DemoModel(model, threshold=threshold, workdir=tmp_path).classify(saved["long"])
    found = labels_above(want, threshold)
    assert len(found) == 2 and result.summary == ", ".join(f"{c} ({p:.2f})" for c, p in found)
    with open(result.timeline_csv, newline="") as f:
        assert next(csv.reader(f))[2] == "labels"  # the multi-label timeline's column
    assert "multi-label" in DemoModel(model, workdir=tmp_path / "d").description


def test_demo_refuses_bad_input_with_a_clear_message(saved, tmp_path, monkeypatch, capsys):
    from asczoo.cli import main
    from asczoo.data import AudioError
    from asczoo.deploy.demo import DemoModel

    demo = DemoModel(asczoo.from_pretrained(saved["model"]), workdir=tmp_path)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AudioError, match="broken.wav"):
        demo.classify(tmp_path / "broken.wav")
    assert main(["demo", str(saved["model"]), "--port", "0"]) == 2
    assert "--port must be between 1 and 65535" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if the demo extra were not installed
    assert main(["demo", str(saved["model"])]) == 2
    assert "pip install 'asczoo[demo]'" in capsys.readouterr().err


@pytest.mark.slow
def test_the_page_in_a_real_browser_shows_the_predicted_label(saved, page_url):
    playwright = need("playwright.sync_api")
    executable = chromium()
    model, want = expected(saved, "clip")
    with playwright.sync_api.sync_playwright() as p:
        # Chromium's fake microphone (a beep) and no permission prompt: the page's record path
        browser = p.chromium.launch(executable_path=executable, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"])
        try:
            page = browser.new_context(permissions=["microphone"]).new_page()
            page.goto(page_url)
            upload = page.locator("input[type=file]").first
            upload.wait_for(state="attached", timeout=60_000)
            assert model.name in page.locator("h1").first.inner_text()
            upload.set_input_files(str(saved["clip"]))  # the page classifies an uploaded clip at once
            shown = page.locator("#asczoo-prediction")
            page.wait_for_function("document.querySelector('#asczoo-prediction').innerText.includes('Predicted')",
                                   timeout=60_000)
            assert shown.inner_text().strip() == f"Predicted: {want.label} ({want.probabilities[want.label]:.2f})"
            assert page.get_by_text("Top classes").count() >= 1
            assert page.locator("img[src*='explain']").count() == 1  # the relation blocks' picture
            assert page.locator("img[src*='timeline']").count() == 0  # one window: no timeline shown

            page.get_by_label("Clear").first.click()
            page.locator("input[type=file]").first.set_input_files(str(saved["long"]))
            page.wait_for_function("document.querySelector('#asczoo-prediction').innerText.includes('4 windows')",
                                   timeout=60_000)
            label = model.predict(saved["long"]).label
            assert shown.inner_text().strip().startswith(f"Predicted: {label} (")
            page.locator("img[src*='timeline']").wait_for(timeout=30_000)  # the timeline appears for 4 windows

            before = shown.inner_text()
            page.get_by_label("Clear").first.click()  # a recorded clip: about 3 s from the fake microphone
            page.get_by_label("Record audio").first.click()
            page.get_by_role("button", name="Record", exact=True).click()
            page.wait_for_timeout(3000)
            page.get_by_role("button", name="Stop", exact=True).first.click()
            page.wait_for_function(  # while it works the element shows Gradio's timer ("0.0s") instead
                "before => { const t = document.querySelector('#asczoo-prediction').innerText.trim();"
                " return t !== before.trim() && t.startsWith('Predicted:'); }", arg=before, timeout=60_000)
            recorded = shown.inner_text().strip()  # e.g. "Predicted: park (0.61) over 2 windows (3.1 s)"
            assert recorded.startswith("Predicted: ") and recorded.split()[1] in model.classes, recorded
            assert 2.5 < float(recorded.rsplit("(", 1)[1].split()[0]) < 10, recorded  # the recording's length
        finally:
            browser.close()


@pytest.mark.slow
def test_gradio_client_gets_the_same_answers_from_the_same_server(saved, page_url):
    need("gradio_client")
    from gradio_client import Client, handle_file

    model, want = expected(saved, "clip")
    client = Client(page_url, verbose=False)
    summary, scores, timeline_png, timeline_csv, explain_png = client.predict(handle_file(str(saved["clip"])),
                                                                              api_name="/classify")
    assert summary == f"**Predicted:** {want.label} ({want.probabilities[want.label]:.2f})"
    assert scores["label"] == want.label
    for entry in scores["confidences"]:
        assert entry["confidence"] == pytest.approx(want.probabilities[entry["label"]], abs=1e-6)
    assert timeline_png is None and timeline_csv is None
    assert Path(explain_png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    summary, scores, timeline_png, timeline_csv, _ = client.predict(handle_file(str(saved["long"])),
                                                                    api_name="/classify")
    assert "over 4 windows (7.0 s)" in summary and scores["label"] == model.predict(saved["long"]).label
    with open(timeline_csv, newline="") as f:
        assert len(list(csv.reader(f))) == 1 + 4
    with pytest.raises(Exception, match="Upload or record a clip first"):
        client.predict(None, api_name="/classify")


def test_publish_space_uploads_a_space_pinned_to_the_model_commit(saved, tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi

    from asczoo.cli import main

    calls, uploaded = [], {}

    def record(name):
        def method(api, *args, **kwargs):
            calls.append((name, args, kwargs))
            if name == "create_commit":
                for op in args[1]:
                    uploaded[(kwargs.get("repo_type"), op.path_in_repo)] = Path(op.path_or_fileobj).read_text(
                        errors="replace")
                return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/fake/{len(calls)}",
                                                "oid": "0123456789abcdef0123456789abcdef01234567"})()
        return method

    for name in ("create_repo", "create_branch", "create_commit"):
        monkeypatch.setattr(HfApi, name, record(name))
    assert main(["publish", str(saved["model"]), "--repo", "org/tiny", "--space"]) == 0
    assert [c[0] for c in calls] == ["create_repo", "create_commit", "create_repo", "create_commit"]
    assert calls[2][1] == ("org/tiny-demo",) and calls[2][2]["repo_type"] == "space"
    assert calls[2][2]["space_sdk"] == "gradio" and calls[3][2]["repo_type"] == "space"
    assert sorted(n for t, n in uploaded if t == "space") == ["README.md", "app.py", "requirements.txt"]
    app = uploaded[("space", "app.py")]
    assert "build_demo('hf-hub:org/tiny', revision='0123456789abcdef0123456789abcdef01234567')" in app
    assert "https://huggingface.co/spaces/org/tiny-demo" in capsys.readouterr().out

    calls.clear()
    assert main(["publish", str(saved["model"]), "--repo", "org/tiny", "--space", "not a space"]) == 2
    assert calls == [] and "expected a Space id 'org/name'" in capsys.readouterr().err


def test_the_space_installs_asczoo_as_this_copy_was_installed(monkeypatch):
    from importlib import metadata

    from asczoo.hub import space
    from asczoo.version import __version__

    def installed(direct_url):
        class Dist:
            def read_text(self, name):
                return json.dumps(direct_url) if name == "direct_url.json" and direct_url else None
        monkeypatch.setattr(metadata, "distributions", lambda name: [Dist()])

    installed({"url": "https://github.com/org/asczoo", "vcs_info": {"vcs": "git", "commit_id": "abc123"}})
    assert space.asczoo_requirement() == "asczoo[demo] @ git+https://github.com/org/asczoo@abc123"
    installed(None)  # from the package index: a wheel in site-packages
    monkeypatch.setattr(space, "__file__", "/usr/lib/python3/site-packages/asczoo/hub/space.py")
    assert space.asczoo_requirement() == f"asczoo[demo]=={__version__}"
    installed({"url": "file:///home/me/asczoo", "dir_info": {"editable": True}})
    with pytest.warns(UserWarning, match="which a Space cannot reach"):
        assert space.asczoo_requirement() == f"asczoo[demo]=={__version__}"


def test_the_space_names_third_party_plugins_in_its_requirements(tmp_path):
    from huggingface_hub import SpaceCard

    from asczoo.hub.space import space_files
    from asczoo.training.publish import publish_run

    if "nonlocal" not in asczoo.list_models() and "nonlocal-net-resnet18" not in asczoo.list_models():
        pytest.skip("the example plugin asczoo-nonlocal is not installed (pip install -e plugins/asczoo-nonlocal)")
    from importlib import metadata

    from asczoo.testing import TINY_OVERRIDES

    asczoo.create_model("nonlocal-net-resnet18", overrides=TINY_OVERRIDES).save_pretrained(tmp_path / "model")
    publish_run(tmp_path / "model", "org/nl", dry_run_dir=tmp_path / "out", space_id="org/nl-demo")
    requirements = (tmp_path / "out" / "space" / "requirements.txt").read_text().splitlines()
    assert requirements[1].startswith("asczoo[demo]")
    assert f"asczoo-nonlocal=={metadata.version('asczoo-nonlocal')}" in requirements
    card = SpaceCard.load(tmp_path / "out" / "space" / "README.md")
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py" and card.data.models == ["org/nl"]
    with pytest.raises(ValueError, match="expected 'org/name'"):
        space_files("no-slash")


@pytest.mark.slow
def test_the_space_app_serves_the_published_model_from_the_hub_cache(saved, tmp_path):
    need("gradio")
    from gradio_client import Client, handle_file

    from asczoo.training.publish import publish_run

    publish_run(saved["model"], "org/tiny", dry_run_dir=tmp_path / "out", space_id="org/tiny-demo")
    space = tmp_path / "out" / "space"
    cache = tmp_path / "hf-cache"
    seed_hub_cache(cache, "org/tiny", tmp_path / "out", "a" * 40, files=["config.json", "model.safetensors", "README.md"])
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "GRADIO_SERVER_PORT": str(port),
           "GRADIO_SERVER_NAME": "127.0.0.1"}
    server = serve([sys.executable, "app.py"], port, tmp_path / "space.log", cwd=space, env=env)  # as the Space runs it
    try:
        _, want = expected(saved, "clip")
        summary, scores, *_ = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            handle_file(str(saved["clip"])), api_name="/classify")
        assert scores["label"] == want.label and want.label in summary
    finally:
        stop(server)


@pytest.mark.slow
def test_the_demo_at_the_real_size(tmp_path):
    """The full ATReSN-Net on a 10-second 48 kHz stereo clip and a 25-second recording (3 windows)."""
    import torch

    from asczoo.deploy.demo import DemoModel

    torch.manual_seed(0)
    model = asczoo.create_model("atresn-net-resnet18", num_classes=10).eval()
    demo = DemoModel(model, workdir=tmp_path / "work")
    clip = write_clip(tmp_path / "ten.wav", 10.0, 48000, 2, 2)
    result = demo.classify(clip)
    want = model.predict(clip)
    assert result.label == want.label and result.windows == 1
    assert result.probabilities == pytest.approx(want.probabilities, abs=1e-6)
    assert result.explain_png.stat().st_size > 10_000
    long = demo.classify(write_clip(tmp_path / "long.wav", 25.0, 48000, 2, 3))
    assert long.windows == 3 and long.timeline_png is not None and long.timeline_csv is not None
