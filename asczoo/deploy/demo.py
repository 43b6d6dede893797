"""A trained model's demo page: ``asczoo demo MODEL`` serves it on this machine, and the Hugging Face
Space that ``asczoo publish ... --space`` writes runs the same page (its ``app.py`` calls
:func:`build_demo`).

The page (Gradio, the optional extra ``pip install 'asczoo[demo]'``) takes an uploaded or recorded clip
and shows what ``asczoo predict`` would say of it: the predicted scene, the most probable classes, and
for a recording longer than the model's clip its timeline (the probabilities over time with the label
bands of ``asczoo predict --timeline-plot``, and the CSV of ``--timeline``); for a model with relation
blocks, the picture ``asczoo explain`` draws of the first clip window.

The work is :class:`DemoModel` (no Gradio: the tests and other front ends call it directly); the page
is :func:`build_demo`. One clip is classified at a time (``concurrency_limit=1``): the model already
uses every core for one clip, so a second request would only slow the first down.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

#: what a missing Gradio says (the page is an optional extra)
INSTALL_HINT = "the demo page needs Gradio: pip install 'asczoo[demo]'"
#: classes shown in the page's "top classes" list
TOP_CLASSES = 5
#: the page's element ids (the browser test reads them)
PREDICTION_ID = "asczoo-prediction"


@dataclasses.dataclass
class DemoResult:
    """What the page shows for one recording."""

    #: one line: the predicted scene (multi-label: every class at or above the threshold)
    summary: str
    label: str
    probabilities: dict[str, float]
    seconds: float
    windows: int
    timeline_png: Path | None = None
    timeline_csv: Path | None = None
    explain_png: Path | None = None


class DemoModel:
    """A loaded model and what the page does with a clip: :meth:`classify`.

    ``workdir`` holds the pictures and CSV of the last few requests (Gradio copies what it serves
    into its own cache); it is a fresh temporary folder by default, removed by :meth:`close`.
    """

    #: requests whose files are kept in ``workdir`` (older ones are removed)
    KEEP = 8

    def __init__(self, model, *, title: str | None = None, threshold: float = 0.5, hop_seconds: float | None = None,
                 smooth: int = 1, workdir: str | os.PathLike | None = None) -> None:
        from asczoo.inference import check_smooth

        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        self.model = model.eval()
        self.title = title or getattr(model, "name", None) or "asczoo model"
        self.threshold = threshold
        self.hop_seconds = hop_seconds
        self.smooth = check_smooth(smooth)
        self.multi_label = getattr(model, "task", "single-label") == "multi-label"
        self.explains = bool(getattr(model, "relations", None))
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="asczoo-demo-") if workdir is None else workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._requests = 0

    @property
    def description(self) -> str:
        """Markdown under the page title: the classes and the clip the model hears."""
        frontend = getattr(self.model, "frontend_config", {}) or {}
        clip = frontend.get("clip_seconds")
        rate = frontend.get("sample_rate")
        heard = f" It hears {clip:g}-second windows at {rate} Hz" if clip and rate else ""
        kind = "multi-label (every class at or above " f"{self.threshold:g})" if self.multi_label else "one scene per clip"
        classes = ", ".join(self.model.classes)
        return (f"Upload or record a clip.{heard}; a longer recording is cut into windows and also shown as a "
                f"timeline. {len(self.model.classes)} classes, {kind}: {classes}.")

    def classify(self, path: str | os.PathLike, *, progress: bool = False) -> DemoResult:
        """Classify one audio file (WAV, FLAC) as ``asczoo predict`` does, with the timeline and the
        explain picture; ``progress`` shows a bar of the position in the recording (the page follows
        it). Bad audio raises :class:`asczoo.data.AudioError` naming the file."""
        from asczoo.inference import plot_timeline, predict_timeline, write_timeline

        prediction, rows = predict_timeline(self.model, path, hop_seconds=self.hop_seconds, smooth=self.smooth,
                                            threshold=self.threshold, progress=progress)
        out = self._request_folder()
        result = DemoResult(self._summary(prediction), prediction.label, prediction.probabilities,
                            seconds=rows[-1].end if rows else 0.0, windows=len(rows))
        if len(rows) > 1:
            result.timeline_csv = out / "timeline.csv"
            write_timeline(rows, self.model.classes, result.timeline_csv, multi_label=self.multi_label)
            png = out / "timeline.png"
            if plot_timeline(rows, self.model.classes, png, title=f"{Path(path).name}: {len(rows)} windows"):
                result.timeline_png = png
        if self.explains:
            result.explain_png = self._explain(path, out / "explain.png")
        return result

    def _summary(self, prediction) -> str:
        if not self.multi_label:
            return f"{prediction.label} ({prediction.probabilities[prediction.label]:.2f})"
        from asczoo.inference import labels_above

        found = labels_above(prediction, self.threshold)
        return ", ".join(f"{c} ({p:.2f})" for c, p in found) or f"no class at or above {self.threshold:g}"

    def _explain(self, path: str | os.PathLike, png: Path) -> Path:
        """``asczoo explain``'s picture of the recording's first clip window (read alone, not the file)."""
        from asczoo.analysis.explain import draw, explain
        from asczoo.data.audio import AudioStream
        from asczoo.inference import model_frontend, stream_windows

        frontend = model_frontend(self.model)
        with AudioStream(path) as stream:
            first = next(stream_windows(stream.blocks(), stream.sample_rate, frontend, chunk=1))
        features = frontend.batch(first.waveforms, first.sample_rate)[0]
        draw(explain(self.model, features), features, png)
        return png

    def _request_folder(self) -> Path:
        self._requests += 1
        folder = self.workdir / f"request-{self._requests:06d}"
        folder.mkdir()
        stale = self.workdir / f"request-{self._requests - self.KEEP:06d}"
        if self._requests > self.KEEP and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        return folder

    def close(self) -> None:
        """Remove the working folder (when this object made it)."""
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _gradio():
    try:
        import gradio
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    return gradio


def build_demo(model: Any, *, revision: str | None = None, device: str | None = None, title: str | None = None,
               threshold: float = 0.5, hop_seconds: float | None = None, smooth: int = 1):
    """The demo page of ``model`` (a loaded model, or what ``asczoo predict`` takes: a folder,
    ``hf-hub:org/name``, ``org/name``, a registry name with published weights) as a ``gradio.Blocks``;
    ``.launch()`` serves it. Its API endpoint ``/classify`` takes an audio file and returns what the
    page shows (the summary line, the class probabilities, timeline picture and CSV, explain picture).
    """
    gr = _gradio()
    if isinstance(model, (str, os.PathLike)):
        from asczoo.models.factory import load_model

        model = load_model(model, revision=revision, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
    demo_model = DemoModel(model, title=title, threshold=threshold, hop_seconds=hop_seconds, smooth=smooth)
    atexit.register(demo_model.close)  # a Space's app.py never calls close(); its working folder goes at exit

    def classify(path: str | None, progress=gr.Progress(track_tqdm=True)):
        from asczoo.data.audio import AudioError

        if not path:
            raise gr.Error("Upload or record a clip first.")
        try:
            result = demo_model.classify(path, progress=True)  # the page shows the recording's position
        except (AudioError, ValueError) as exc:
            raise gr.Error(str(exc)) from exc
        long = result.windows > 1
        return (
            f"**Predicted:** {result.summary}" + (f" over {result.windows} windows ({result.seconds:.1f} s)"
                                                   if long else ""),
            result.probabilities,
            str(result.timeline_png) if result.timeline_png else None,
            str(result.timeline_csv) if result.timeline_csv else None,
            str(result.explain_png) if result.explain_png else None,
        )

    def show_timeline(csv: Any):
        """The timeline's picture and CSV are shown for a recording of several windows only."""
        return gr.update(visible=bool(csv)), gr.update(visible=bool(csv))

    with gr.Blocks(title=f"{demo_model.title} - asczoo", delete_cache=(3600, 3600)) as page:
        gr.Markdown(f"# {demo_model.title}\n{demo_model.description}")
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Clip (WAV or FLAC)")
                button = gr.Button("Classify", variant="primary")
            with gr.Column():
                summary = gr.Markdown(elem_id=PREDICTION_ID)
                classes = gr.Label(num_top_classes=min(TOP_CLASSES, len(model.classes)), label="Top classes")
        timeline_png = gr.Image(label="Timeline: probabilities over time, the label of each window above",
                                type="filepath", visible=False, interactive=False)
        timeline_csv = gr.File(label="Timeline (CSV, one row per window)", visible=False, interactive=False)
        explain_png = gr.Image(label="Neighbourhoods the relation blocks chose in the first clip window",
                               type="filepath", visible=demo_model.explains, interactive=False)
        outputs = [summary, classes, timeline_png, timeline_csv, explain_png]
        for event, api_name in ((button.click, "classify"), (audio.upload, False), (audio.stop_recording, False)):
            event(classify, inputs=audio, outputs=outputs, api_name=api_name, concurrency_limit=1,
                  concurrency_id="classify").then(show_timeline, inputs=timeline_csv,
                                                  outputs=[timeline_png, timeline_csv], api_name=False)
    page.demo_model = demo_model
    return page
