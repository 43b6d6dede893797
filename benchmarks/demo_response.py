"""Response time of the demo page (``asczoo demo``) for one clip, against the same work without the page.

Saves a model with random weights (the time does not depend on them), starts ``asczoo demo`` on it as
a user does (its own process, on this machine), writes one synthetic 10-second 48 kHz stereo clip (the
DCASE clip) and times, round-robin: (a) the page: ``gradio_client``'s ``predict`` of the clip on the
page's ``/classify`` endpoint, from upload to the answer with its pictures; (b) what the page computes,
in this process: :meth:`asczoo.deploy.demo.DemoModel.classify` (prediction, timeline when several
windows, the explain picture of a relation model); (c) the prediction alone, ``model.predict``. (a)/(b)
is what Gradio's HTTP, upload and queue add; (b)/(c) is what the pictures add. The server and this
process each use ``--threads`` threads, one of them waiting while the other works.

Run: ``python -m benchmarks.demo_response [--quick] [--model NAME] [--seconds 10]`` (``--quick``: 2
repeats; ``--tiny``: test widths, a smoke run); last line ``RESULT page_s=... classify_s=... predict_s=...
page_over_classify=...``. Needs the demo extra (``pip install -e '.[demo]'``); nothing else heavy
should run at the same time.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

import asczoo
from benchmarks import common

RATE = 48000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_page(model_dir: Path, port: int, threads: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    server = subprocess.Popen([sys.executable, "-m", "asczoo", "demo", str(model_dir), "--port", str(port),
                               "--device", "cpu"], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"asczoo demo ended with rc {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"asczoo demo did not answer on port {port}:\n{log.read_text()}")


def main(argv: list[str] | None = None) -> dict:
    p = common.parser(__doc__)
    p.add_argument("--model", default="atresn-net-resnet18", help="registry model (default %(default)s)")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds (default %(default)s)")
    p.add_argument("--tiny", action="store_true", help="test widths and input (smoke run of the code; figures meaningless)")
    args = p.parse_args(argv)
    env = common.setup(args.threads)
    repeats = 2 if args.quick else 5
    from gradio_client import Client, handle_file

    from asczoo.deploy.demo import DemoModel
    from asczoo.testing import TINY_OVERRIDES

    model = asczoo.create_model(args.model, overrides=TINY_OVERRIDES if args.tiny else None).eval()
    with tempfile.TemporaryDirectory(prefix="asczoo-demo-bench-") as tmp:
        tmp = Path(tmp)
        model.save_pretrained(tmp / "model")
        clip = tmp / "clip.wav"
        import soundfile as sf

        rng = np.random.default_rng(0)
        n = int(RATE * args.seconds)
        sf.write(str(clip), (0.1 * rng.standard_normal((n, 2))).astype(np.float32), RATE, subtype="PCM_16")
        port = free_port()
        server = start_page(tmp / "model", port, args.threads, tmp / "server.log")
        try:
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            demo = DemoModel(model, workdir=tmp / "work")
            timing = common.interleave({
                "page (gradio_client -> asczoo demo)": lambda: client.predict(handle_file(str(clip)),
                                                                              api_name="/classify"),
                "DemoModel.classify (same work, no page)": lambda: demo.classify(clip),
                "model.predict (prediction only)": lambda: model.predict(clip),
            }, repeats=repeats, warmup=1)
        finally:
            server.terminate()
            server.wait(timeout=30)
    page, classify, predict = (t.median for t in timing.values())
    print(f"\n{args.model}{' (tiny)' if args.tiny else ''}, one {args.seconds:g}-second {RATE} Hz stereo clip; "
          f"median of {repeats} interleaved runs")
    print(common.table(["what", "seconds"], [[name, f"{t.median:.3f}"] for name, t in timing.items()]))
    print(common.result_line(page_s=page, classify_s=classify, predict_s=predict,
                             page_over_classify=page / classify, classify_over_predict=classify / predict))
    return {"env": env, "page_s": page, "classify_s": classify, "predict_s": predict}


if __name__ == "__main__":
    main()
