"""The model card (``README.md``) written next to saved weights, Hugging Face style.

The card has YAML front matter (``library_name: asczoo``, license, tags, pipeline tag and, when an
accuracy and a dataset are known, a ``model-index`` entry) and sections: what the model is, its input,
how it was trained, evaluation results (metrics table, per-class accuracy, confusion matrix), usage,
license and citation.

Results come from the evaluation report of a training run (``report.json``). Keys read, all optional:

``accuracy``
    overall accuracy, a fraction in [0, 1] (``overall_accuracy`` is accepted too);
``per_class_accuracy``
    ``{class: fraction}``, or a list in class order (``class_accuracy`` accepted too);
``confusion_matrix``
    counts, rows are true classes and columns predicted ones, in the order of ``classes``;
``classes``
    the class order of the two entries above (default: the model's);
``dataset``, ``split``, ``fold``, ``num_clips``, ``epoch``
    what was evaluated (and which epoch's weights);
other top-level numbers (``loss``, ``macro_f1``, ...)
    listed in the metrics table as they are.
"""

from __future__ import annotations

import html
import math
from typing import Any, Mapping, Sequence

import yaml

from asczoo.version import __version__

DEFAULT_LICENSE = "apache-2.0"
_ACCURACY_KEYS = ("accuracy", "overall_accuracy")
_PER_CLASS_KEYS = ("per_class_accuracy", "class_accuracy")
_DESCRIPTIVE_KEYS = ("dataset", "split", "fold", "num_clips", "epoch")

CITATION = """\
@inproceedings{zhang2021atresnnet,
  title     = {{ATReSN-Net}: Capturing Attentive Temporal Relations in Semantic Neighborhood for
               Acoustic Scene Classification},
  author    = {Zhang, Liwen and Han, Jiqing and Shi, Ziqiang},
  booktitle = {Proc. Interspeech 2021},
  year      = {2021}
}"""


def metrics_from_report(report: Mapping[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    """The metrics worth keeping in ``config.json``: accuracy, per-class accuracy, other numbers,
    and what was evaluated."""
    metrics: dict[str, Any] = {}
    accuracy = _first(report, _ACCURACY_KEYS)
    if _is_number(accuracy):
        metrics["accuracy"] = float(accuracy)
    per_class = _per_class(report, classes)
    if per_class:
        metrics["per_class_accuracy"] = per_class
    for key, value in report.items():
        if key in _ACCURACY_KEYS or key in _PER_CLASS_KEYS:
            continue
        if _is_number(value) or (key in _DESCRIPTIVE_KEYS and isinstance(value, (str, int))):
            metrics[key] = value
    return metrics


def render_model_card(
    config: Mapping[str, Any],
    *,
    report: Mapping[str, Any] | None = None,
    confusion_image: str | None = None,
    parameters: Mapping[str, int] | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    complexity: str | None = None,
) -> str:
    """The ``README.md`` text for a model whose ``config.json`` mapping is ``config``.

    The results come from ``config["metrics"]`` (:func:`metrics_from_report` turns a report into
    them); ``report`` adds its confusion matrix as a table when there is no ``confusion_image``.
    """
    classes = list(config["classes"])
    recipe = {**(config.get("recipe") or {}), "frontend": config["frontend"]}
    metrics = dict(config.get("metrics") or {})
    name = config["name"] + (f".{config['tag']}" if config.get("tag") else "")
    license = license or DEFAULT_LICENSE

    parts = [_front_matter(config, metrics, license), f"# {name}\n"]
    description = recipe.get("description")
    parts.append(
        (f"{description}\n\n" if description else "")
        + f"An acoustic scene classifier over {len(classes)} classes, built and saved with "
        f"[asczoo](https://pypi.org/project/asczoo/) {config.get('asczoo_version', __version__)}, a "
        "model zoo for ATReSN-Net (Interspeech 2021) and its relatives. The weights are in "
        "`model.safetensors`; `config.json` holds the recipe, classes, frontend and normalisation "
        "statistics needed to rebuild it.\n"
    )
    parts.append(_model_section(config, recipe, parameters))
    if complexity:  # asczoo.analysis.complexity's summary: parameters, bytes, MACs, DCASE limits
        parts.append("## Complexity\n\n" + complexity.replace("\n", "  \n") + "\n")
    parts.append(_input_section(config))
    parts.append(_training_section(config.get("training")))
    parts.append(_results_section(metrics, classes, report, confusion_image, recipe))
    parts.append(_usage_section(repo_id))
    parts.append(
        "## License\n\n"
        f"The weights are released under `{license}`; asczoo itself is Apache-2.0. The data the model "
        "was trained on may come with its own terms (the DCASE development sets do); check them before "
        "using the model beyond research.\n"
    )
    parts.append(
        "## Citation\n\nIf you use this model, please cite the ATReSN-Net paper:\n\n"
        f"```bibtex\n{CITATION}\n```\n"
    )
    return "\n".join(parts)


# -- sections ------------------------------------------------------------------------------------------


def _front_matter(config: Mapping[str, Any], metrics: Mapping[str, Any], license: str) -> str:
    recipe = config.get("recipe") or {}
    tags = ["asczoo", "audio-classification", "acoustic-scene-classification", "dcase", "pytorch", "safetensors"]
    relation = recipe.get("relation") or {}
    for extra in (config["name"], relation.get("plugin")):
        if isinstance(extra, str) and extra not in tags:
            tags.append(extra)
    meta: dict[str, Any] = {
        "library_name": "asczoo",
        "license": license,
        "tags": tags,
        "pipeline_tag": "audio-classification",
    }
    parent = base_model(config.get("training"))
    if parent is not None:  # the Hub links a fine-tuned model to its parent by this key
        meta["base_model"] = parent
    accuracy, dataset = metrics.get("accuracy"), metrics.get("dataset")
    if _is_number(accuracy) and isinstance(dataset, str) and dataset:
        dataset_entry = {"name": dataset, "type": dataset}
        if isinstance(metrics.get("split"), str):
            dataset_entry["split"] = metrics["split"]
        meta["model-index"] = [{
            "name": config["name"],
            "results": [{
                "task": {"type": "audio-classification", "name": "Acoustic scene classification"},
                "dataset": dataset_entry,
                "metrics": [{"type": "accuracy", "name": "Accuracy (%)", "value": round(100 * float(accuracy), 2)}],
            }],
        }]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def _model_section(config: Mapping[str, Any], recipe: Mapping[str, Any], parameters: Mapping[str, int] | None) -> str:
    rows = []
    for section in ("backbone", "inflator", "relation", "head"):
        spec = recipe.get(section)
        if not spec:
            if section == "relation":
                rows.append(("relation blocks", "none"))
            continue
        options = ", ".join(f"{k}={_short(v)}" for k, v in spec.items() if k != "plugin")
        rows.append((section, f"`{spec.get('plugin')}`" + (f" ({options})" if options else "")))
    if parameters:
        total = parameters.get("total")
        detail = ", ".join(f"{k} {v:,}" for k, v in parameters.items() if k != "total")
        rows.append(("parameters", f"{total / 1e6:.2f} M" + (f" ({detail})" if detail else "")))
    text = "## Model\n\n" + _table(("part", "configuration"), rows)
    text += (
        "\n<details><summary>Resolved recipe</summary>\n\n```yaml\n"
        + yaml.safe_dump({k: v for k, v in recipe.items() if k not in ("weights",)}, sort_keys=False).rstrip()
        + "\n```\n\n</details>\n"
    )
    return text


def _input_section(config: Mapping[str, Any]) -> str:
    frontend = dict(config.get("frontend") or {})
    shape = config.get("input_shape")
    lines = ["## Input\n"]
    rate = frontend.get("sample_rate")
    clip = frontend.get("clip_seconds")
    if rate and clip:
        lines.append(
            f"Recordings of any sample rate and one or two channels: the model's frontend resamples to "
            f"{rate} Hz, duplicates mono to both sides, and classifies {clip:g}-second clips; longer "
            "recordings are classified in windows whose class probabilities are averaged "
            "(`model.predict`, `asczoo predict`).\n"
        )
    if shape:
        lines.append(f"Model input (segments, channels, mel bands, frames): `{tuple(shape)}` per clip.\n")
    lines.append("Frontend configuration (`config.json`, key `frontend`):\n")
    lines.append(_table(("option", "value"), [(k, _short(v)) for k, v in frontend.items()]))
    norm = config.get("normalization")
    if norm:
        lines.append(
            "\nInputs are normalised per channel and mel band with statistics of the training set, stored "
            "in the weights (`norm_mean`, `norm_std`) and in `config.json`.\n"
        )
    lines.append(f"\nClasses ({len(config['classes'])}): " + ", ".join(_text(c) for c in config["classes"]) + ".\n")
    if config.get("task") == "multi-label":
        lines.append("\nTask: **multi-label** (any number of classes per clip): the logits expect a **sigmoid** "
                     "per class (`config.json`: `activation: sigmoid`), trained with binary cross-entropy; "
                     "`asczoo predict` lists every class above its threshold.\n")
    else:
        lines.append("\nTask: single-label: the logits expect a **softmax** over the classes "
                     "(`config.json`: `activation: softmax`).\n")
    return "\n".join(lines)


def base_model(training: Any) -> str | None:
    """The Hub id of the model these weights were fine-tuned from (``training.init_from`` as
    ``hf-hub:org/name[@revision]``), or None: a local parent folder has no id to link to."""
    from asczoo.names import HF_PREFIX, parse_hub_name

    source = training.get("init_from") if isinstance(training, Mapping) else None
    if not isinstance(source, str) or not source.startswith(HF_PREFIX):
        return None
    try:
        return parse_hub_name(source)[0]
    except ValueError:
        return None


def _training_section(training: Any) -> str:
    if not training:
        return "## Training\n\nTraining details were not recorded with these weights.\n"
    source = training.get("init_from") if isinstance(training, Mapping) else None
    parent = ""
    if isinstance(source, str) and "/" in source:  # a folder or a Hub id, not an earlier stage's name
        parent = f"Fine-tuned from `{source}` (a new head for the classes above; the parent's backbone first).\n\n"
    return (
        "## Training\n\n" + parent +
        "As recorded by the training run (`config.json`, key `training`):\n\n```yaml\n"
        + yaml.safe_dump(training, sort_keys=False, allow_unicode=True).rstrip()
        + "\n```\n"
    )


def _results_section(
    metrics: Mapping[str, Any], classes: Sequence[str], report: Mapping[str, Any] | None,
    confusion_image: str | None, recipe: Mapping[str, Any],
) -> str:
    lines = ["## Evaluation\n"]
    where = ", ".join(f"{k.replace('_', ' ')}: {_text(metrics[k])}" for k in _DESCRIPTIVE_KEYS if k in metrics)
    if where:
        lines.append(f"Evaluated on {where}.\n")
    rows = []
    percent = ("accuracy", "mAP")  # fractions shown as percentages (mAP: multi-label models)
    for key in percent:
        if _is_number(metrics.get(key)):
            rows.append((key, f"{100 * float(metrics[key]):.2f} %"))
    for key, value in metrics.items():
        if key not in percent and key not in _DESCRIPTIVE_KEYS and _is_number(value):
            rows.append((key.replace("_", " "), _number(value)))
    if rows:
        lines.append(_table(("metric", "value"), rows))
    else:
        lines.append("No evaluation results were recorded with these weights.\n")
    per_class = metrics.get("per_class_accuracy")
    if isinstance(per_class, Mapping) and per_class:
        lines.append("\nPer-class accuracy:\n")
        lines.append(_table(("class", "accuracy"), [(_markdown(c), f"{100 * float(a):.2f} %") for c, a in per_class.items()
                                                     if _is_number(a)]))
    if confusion_image:
        lines.append(f"\nConfusion matrix (rows: true class, columns: predicted):\n\n![Confusion matrix]({confusion_image})\n")
    elif report is not None and isinstance(report.get("confusion_matrix"), list):
        order = list(report.get("classes") or classes)
        matrix = report["confusion_matrix"]
        if len(matrix) == len(order) and all(isinstance(r, list) and len(r) == len(order) for r in matrix):
            lines.append("\nConfusion matrix (rows: true class, columns: predicted):\n")
            names = [_markdown(c) for c in order]
            lines.append(_table(("true \\ predicted", *names), [(c, *map(_number, row)) for c, row in zip(names, matrix)]))
    paper = recipe.get("paper") or {}
    reported = [(k[len("acc_"):].upper(), v) for k, v in paper.items() if k.startswith("acc_") and _is_number(v)]
    if reported:
        lines.append(
            "\nFor comparison, the paper reports "
            + ", ".join(f"{v:.2f} % on {k}" for k, v in reported)
            + " (fold-1 evaluation sets) for this architecture at full size.\n"
        )
    return "\n".join(lines)


def _usage_section(repo_id: str | None) -> str:
    source = repo_id or "path/to/this/folder"
    cli_source = f"hf-hub:{repo_id}" if repo_id else "path/to/this/folder"
    return (
        "## Usage\n\n"
        "```bash\npip install asczoo\n```\n\n"
        "```python\nimport asczoo\n\n"
        f'model = asczoo.from_pretrained("{source}")\n'
        'label, probabilities = model.predict("recording.wav")  # any sample rate, mono or stereo\n'
        "print(label, probabilities[label])\n```\n\n"
        "From the command line (DCASE submission file plus per-class scores):\n\n"
        f"```bash\nasczoo predict {cli_source} path/to/audio/ --output submission.tsv\n```\n"
    )


# -- helpers -------------------------------------------------------------------------------------------


def _first(mapping: Mapping[str, Any], keys: Sequence[str]) -> Any:
    return next((mapping[k] for k in keys if k in mapping), None)


def _per_class(report: Mapping[str, Any], classes: Sequence[str]) -> dict[str, float]:
    value = _first(report, _PER_CLASS_KEYS)
    order = list(report.get("classes") or classes)
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items() if _is_number(v)}
    if isinstance(value, list) and len(value) == len(order) and all(_is_number(v) for v in value):
        return {c: float(v) for c, v in zip(order, value)}
    return {}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _short(value: Any) -> str:
    text = str(value) if not isinstance(value, (list, dict)) else yaml.safe_dump(value, default_flow_style=True).strip()
    return text if len(text) <= 80 else text[:77] + "..."


def _text(value: Any) -> str:
    """``value`` as inert Markdown text: HTML escaped (a class named ``<script>`` stays text), one line,
    with the characters that open links, images and code spans escaped."""
    return _markdown(html.escape(str(value), quote=False))


def _markdown(value: Any) -> str:
    """``value`` on one line, with the Markdown characters that open links, images, emphasis and code
    spans escaped (HTML is escaped by the caller: :func:`_text`, or :func:`_cell` in tables)."""
    text = str(value).replace("\r", " ").replace("\n", " ")
    for char in ("\\", "`", "[", "]", "!", "*", "_"):
        text = text.replace(char, "\\" + char)
    return text


def _cell(value: Any) -> str:
    """A table cell: HTML escaped, one line, ``|`` escaped (the card's own code spans are kept)."""
    return html.escape(str(value), quote=False).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(_cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"
