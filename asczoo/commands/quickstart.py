"""``asczoo quickstart``: the whole demo in one command (``quickstart.sh`` installs, then runs this).

Synthesises the embedded scenes dataset, trains the two-stage ``quickstart`` recipe (segment baseline,
then ATReSN-Net initialised from it), evaluates both on the held-out fold-1 clips, predicts one
held-out clip, and prints the accuracies. Running it again continues or reuses the run (``--resume``).
"""

from __future__ import annotations

import argparse

COMMAND = "quickstart"
HELP = "synthesise scenes, train the two-stage quickstart recipe, evaluate, predict a clip (minutes on a CPU)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/quickstart", metavar="RUN_DIR",
                        help="run directory; the synthetic data goes to RUN_DIR/data (default %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of the quickstart recipe (see `asczoo train quickstart --show`)")
    parser.add_argument("--fresh", action="store_true", help="start a new run even if RUN_DIR holds one")


def run(args: argparse.Namespace) -> int:
    import csv
    import shutil
    import time
    from pathlib import Path

    from asczoo.evaluation import evaluate
    from asczoo.hub import from_pretrained
    from asczoo.training import train

    began = time.perf_counter()
    out = Path(args.out)
    if args.fresh and out.exists():
        if not (out / "recipe.yaml").is_file() and any(out.iterdir()):
            # --fresh removes a run, never a folder that holds something else (the user's files)
            raise FileExistsError(f"{out} is not an asczoo run directory (no recipe.yaml); --fresh removes only "
                                  "runs: choose another --out")
        shutil.rmtree(out)
    result = train("quickstart", out=out, resume=True, overrides=args.overrides)
    trained = time.perf_counter()
    data = out / "data"

    print("\n== evaluation on the held-out clips (fold 1 evaluate: recording locations unseen in training) ==")
    evaluations = {}
    for stage, label in (("stage1", "segment baseline (ResNet-18 on segments)"),
                         ("stage2", "ATReSN-Net (initialised from stage 1)")):
        evaluations[stage] = evaluate(out, data, stage=stage)
        print(f"\n-- {label} --")
        print(evaluations[stage].format())

    with open(data / "evaluation_setup" / "fold1_evaluate.csv", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f, delimiter="\t")][1:]
    clip, truth = rows[0][0], rows[0][1]
    model = from_pretrained(result.model_dir)
    prediction = model.predict(str(data / clip))
    top = sorted(prediction.probabilities.items(), key=lambda kv: -kv[1])[:3]
    print(f"\n== prediction for one held-out clip ==\n{clip}: {prediction.label} (true: {truth}); "
          f"top 3: {', '.join(f'{c} {100 * p:.1f}%' for c, p in top)}")
    print(f"   (the same from the shell: asczoo predict {result.model_dir} {data / clip})")

    chance = 100.0 / len(model.classes)
    first, second = evaluations["stage1"], evaluations["stage2"]
    print(f"\n== quick start done in {_clock(time.perf_counter() - began)} (training {_clock(trained - began)}) ==")
    print(f"held-out accuracy on {second.clips} clips of {len(model.classes)} classes (chance {chance:.0f}%):")
    print(f"  segment baseline (stage 1)  {100 * first.accuracy:5.1f}%")
    print(f"  ATReSN-Net       (stage 2)  {100 * second.accuracy:5.1f}%")
    print(f"run directory: {out}  (report.md, metrics.jsonl, confusion_matrix.png, model/)")
    return 0


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"
