"""Conformance checks for the data side: frontends, datasets and batch augmentations."""

from __future__ import annotations

import json
import math
import random
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from asczoo.interfaces import Frontend
from asczoo.testing.suite import (
    SkipCheck, Suite, assert_close, assert_finite, assert_shape, check_description, check_signature,
    isolated_rng, randn, resolve,
)

FRONTEND_CHECKS = ("signature", "interface", "shapes", "mono", "resampling", "short_clip", "batch", "rebuild",
                   "determinism")
DATASET_CHECKS = ("interface", "items", "determinism", "collate", "paths")
AUGMENTATION_CHECKS = ("signature", "description", "shapes", "targets", "inputs_untouched", "reproducible",
                       "batch_of_one", "cuda")


def waveform(channels: int, seconds: float, rate: int, *, seed: int = 0) -> torch.Tensor:
    """A deterministic test signal ``(channels, samples)``: a tone per channel plus noise, within [-1, 1]."""
    n = max(1, int(round(seconds * rate)))
    t = torch.arange(n, dtype=torch.float64) / rate
    noise = randn(channels, n, seed=seed, dtype=torch.float64)
    tones = torch.stack([torch.sin(2 * math.pi * (220.0 * (c + 1)) * t) for c in range(channels)])
    return (0.3 * tones + 0.05 * noise).clamp(-1, 1).to(torch.float32)


@isolated_rng
def check_frontend(
    frontend: Frontend | Callable[..., Frontend] | str,
    *,
    options: Mapping[str, Any] | None = None,
    seconds: float | None = None,
    skip: Iterable[str] = (),
):
    """Check an audio frontend (an instance, its factory, or a registered name built with ``options``).

    ``seconds`` is the nominal clip length (default: the config's ``clip_seconds``, else 10).
    Checks: ``signature``, ``interface`` (a :class:`~asczoo.interfaces.Frontend` with a JSON config that
    names its ``plugin``, ``output_shape`` ``(N, 3, F, T)``, an integer ``sample_rate``), ``shapes``
    (a stereo clip gives ``output_shape``, float32, finite), ``mono`` (same shape, left == right),
    ``resampling`` (a clip at half the rate gives the same shape), ``short_clip`` (half a clip is padded
    to the same shape), ``batch`` (``batch()`` equals per-clip calls), ``rebuild``
    (``create_frontend(**config)`` computes the same features), ``determinism``.
    """
    options = dict(options or {})
    if isinstance(frontend, Frontend):
        instance, factory = frontend, None
        subject = f"frontend {type(frontend).__name__} ({frontend.config.get('plugin')!r})"
    else:
        factory, subject, _ = resolve("frontend", frontend)
        instance = None
    suite = Suite(subject + (f" with options {options}" if options else ""), FRONTEND_CHECKS, skip)

    def get() -> Frontend:
        nonlocal instance
        if instance is None:
            built = factory(**options)
            if not isinstance(built, Frontend):
                raise AssertionError(f"the factory returned {type(built).__name__}, not an asczoo.interfaces.Frontend")
            instance = built
        return instance

    def nominal() -> float:
        return float(seconds if seconds is not None else get().config.get("clip_seconds", 10.0))

    def clip(channels: int = 2, *, length: float | None = None, rate: int | None = None,
             seed: int = 0) -> tuple[torch.Tensor, int]:
        rate = rate or get().sample_rate
        return waveform(channels, nominal() if length is None else length, rate, seed=seed), rate

    def features(channels: int = 2, **kwargs: Any) -> torch.Tensor:
        wav, rate = clip(channels, **kwargs)
        return get()(wav, rate)

    def signature() -> None:
        if factory is None:
            raise SkipCheck("checked an instance, not a factory")
        check_signature(factory, options, where=suite.report.subject)

    def interface() -> None:
        fe = get()
        config = fe.config
        if not isinstance(config, dict) or not isinstance(config.get("plugin"), str):
            raise AssertionError("config must be a dict naming its 'plugin'")
        try:
            json.dumps(config)
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"config must be JSON-serialisable (it travels with the weights): {exc}") from None
        shape = tuple(fe.output_shape)
        if len(shape) != 4 or shape[1] != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
            raise AssertionError(f"output_shape must be (N, 3, F, T) of positive integers, got {shape}")
        if isinstance(fe.sample_rate, bool) or not isinstance(fe.sample_rate, int) or fe.sample_rate <= 0:
            raise AssertionError(f"sample_rate must be a positive integer, got {fe.sample_rate!r}")

    def shape_of(out: Any, what: str) -> None:
        assert_shape(out, get().output_shape, what)
        if out.dtype != torch.float32:
            raise AssertionError(f"{what}: dtype {out.dtype}, expected float32")
        assert_finite(out, what)

    def mono() -> None:
        out = features(1)
        shape_of(out, "features of a mono clip")
        assert_close(out[:, 1], out[:, 0], "mono clip: right channel vs. left channel")

    def resampling() -> None:
        rate = get().sample_rate // 2
        shape_of(features(rate=rate), f"features of a clip at {rate} Hz")

    def batch() -> None:
        fe = get()
        clips = torch.stack([clip(seed=1)[0], clip(seed=2)[0]])
        out = fe.batch(clips, fe.sample_rate)
        assert_shape(out, (2, *fe.output_shape), "batch() of two clips")
        for i in range(2):
            assert_close(out[i], fe(clips[i], fe.sample_rate), f"batch() clip {i} vs. calling the frontend on it")

    def rebuild() -> None:
        from asczoo.data.frontend import create_frontend
        from asczoo.plugins import UnknownPartError

        fe = get()
        try:
            again = create_frontend(**fe.config)
        except UnknownPartError:
            raise SkipCheck(f"plugin {fe.config['plugin']!r} is not registered here") from None
        wav, rate = clip(seed=3)
        assert_close(again(wav, rate), fe(wav, rate), "create_frontend(**config) vs. the original")

    def determinism() -> None:
        wav, rate = clip(seed=4)
        if not torch.equal(get()(wav, rate), get()(wav, rate)):
            raise AssertionError("the same clip gives different features on two calls")

    suite.run("signature", signature)
    suite.run("interface", interface)
    suite.run("shapes", lambda: shape_of(features(2), "features of a stereo clip"))
    suite.run("mono", mono)
    suite.run("resampling", resampling)
    suite.run("short_clip", lambda: shape_of(features(length=nominal() / 2), "features of half a clip"))
    suite.run("batch", batch)
    suite.run("rebuild", rebuild)
    suite.run("determinism", determinism)
    return suite.finish()


#: ``check_dataset``'s ``paths`` check copies the dataset root to plant a link; it skips larger roots
MAX_COPIED_ROOT_FILES = 2000


@isolated_rng
def check_dataset(dataset: Any, *, items: int = 3, skip: Iterable[str] = (),
                  reopen: Callable[[str], Any] | None = None):
    """Check a dataset instance (what a ``asczoo_register_datasets`` factory returned).

    Checks: ``interface`` (non-empty, ``classes`` a list of distinct names, ``files`` one string per
    item), ``items`` (up to ``items`` items spread over the dataset are ``(features float32 (N, 3, F, T),
    label int)`` with ``-1 <= label < len(classes)`` (a multi-label dataset: a multi-hot int64 vector over
    ``classes``), all of one shape, the frontend's ``output_shape``
    when the dataset has a ``frontend``), ``determinism`` (an item read twice is the same),
    ``collate`` (a ``DataLoader`` batches it into ``(B, N, 3, F, T)`` and int64 labels), ``paths``
    (every listed file, links resolved, lies inside ``dataset.root`` and is listed once; with
    ``reopen(root) -> dataset``, the reader is run again on a copy of the root whose first listed clip is
    a symbolic link to a file outside it, and must refuse it with a ``DataError`` whose problems include
    an ``outside-root`` one: what a reader built on :class:`asczoo.data.ClipDataset` does unasked).
    """
    suite = Suite(f"dataset {getattr(dataset, 'name', type(dataset).__name__)!r}", DATASET_CHECKS, skip)
    #: a multi-label dataset (``task = "multi-label"``) labels items with multi-hot vectors over ``classes``
    multi_label = getattr(dataset, "task", "single-label") == "multi-label"

    def interface() -> None:
        size = len(dataset)
        if size < 1:
            raise AssertionError("the dataset is empty")
        classes = getattr(dataset, "classes", None)
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
            raise AssertionError(f"classes must be a non-empty list of names, got {classes!r}")
        if len(set(classes)) != len(classes):
            raise AssertionError("classes has duplicate names")
        files = list(getattr(dataset, "files", None) or [])
        if len(files) != size or not all(isinstance(f, str) for f in files):
            raise AssertionError(f"files must list one path (str) per item: {len(files)} for {size} items")

    def indices() -> list[int]:
        size = len(dataset)
        return sorted({round(i * (size - 1) / max(1, items - 1)) for i in range(items)})

    def items_check() -> None:
        shapes = set()
        expected = getattr(getattr(dataset, "frontend", None), "output_shape", None)
        for index in indices():
            item = dataset[index]
            if not (isinstance(item, tuple) and len(item) == 2):
                raise AssertionError(f"item {index} must be a (features, label) tuple, got {type(item).__name__}")
            features, label = item
            what = f"item {index} features"
            if not isinstance(features, torch.Tensor) or features.dim() != 4 or features.shape[1] != 3:
                got = getattr(features, "shape", features)
                raise AssertionError(f"{what}: expected a (N, 3, F, T) tensor, got {got!r}")
            if features.dtype != torch.float32:
                raise AssertionError(f"{what}: dtype {features.dtype}, expected float32")
            assert_finite(features, what)
            if expected is not None:
                assert_shape(features, expected, f"{what} (the frontend's output_shape)")
            shapes.add(tuple(features.shape))
            if multi_label:
                if not (isinstance(label, torch.Tensor) and tuple(label.shape) == (len(dataset.classes),)
                        and label.dtype == torch.int64 and bool(((label == 0) | (label == 1)).all())):
                    raise AssertionError(f"item {index} label of a multi-label dataset must be a multi-hot int64 "
                                         f"vector of {len(dataset.classes)} (one per class), got {label!r}")
                shapes.add(tuple(features.shape))
                continue
            value = int(label) if isinstance(label, torch.Tensor) and label.numel() == 1 else label
            if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value < len(dataset.classes):
                raise AssertionError(
                    f"item {index} label must be an int in [-1, {len(dataset.classes)}), got {label!r}")
        if len(shapes) > 1:
            raise AssertionError(f"items have different shapes: {sorted(shapes)}")

    def determinism() -> None:
        a, b = dataset[0], dataset[0]
        if not torch.equal(a[0], b[0]) or not torch.equal(torch.as_tensor(a[1]), torch.as_tensor(b[1])):
            raise AssertionError("item 0 read twice gives different features or labels")

    def collate() -> None:
        from torch.utils.data import DataLoader

        size = min(2, len(dataset))
        features, labels = next(iter(DataLoader(dataset, batch_size=size, shuffle=False)))
        if features.dim() != 5 or features.shape[0] != size:
            raise AssertionError(f"a DataLoader batch of {size} has features {tuple(features.shape)}")
        wanted = (size, len(dataset.classes)) if multi_label else (size,)
        if labels.dtype != torch.int64 or tuple(labels.shape) != wanted:
            raise AssertionError(f"a DataLoader batch of {size} has labels {labels.dtype} {tuple(labels.shape)}")

    def paths() -> None:
        import os
        import shutil
        import tempfile
        from pathlib import Path

        from asczoo.data.checks import DataError

        root = getattr(dataset, "root", None)
        if root is None:
            raise SkipCheck("the dataset has no root attribute")
        base = Path(root).resolve()
        files = list(dataset.files)
        repeated = sorted({f for f in files if files.count(f) > 1}) if len(set(files)) != len(files) else []
        if repeated:
            raise AssertionError(f"files lists {repeated[0]!r} more than once; a duplicate row must be refused")
        for f in files:
            real = Path(os.path.realpath(base / f))
            if not real.is_relative_to(base):
                raise AssertionError(f"listed file {f!r} resolves to {real}, outside the dataset root {base}")
        if reopen is None:
            return
        count = sum(1 for _ in zip(range(MAX_COPIED_ROOT_FILES + 1), base.rglob("*")))
        if count > MAX_COPIED_ROOT_FILES:
            raise SkipCheck(f"the root holds more than {MAX_COPIED_ROOT_FILES} files; pass a small fixture to "
                            "check a planted link")
        with tempfile.TemporaryDirectory(prefix="asczoo-paths-") as scratch:
            copy = Path(scratch) / "root"
            shutil.copytree(base, copy, symlinks=True)
            outside = Path(scratch) / "outside.wav"
            shutil.copyfile(base / files[0], outside)
            (copy / files[0]).unlink()
            (copy / files[0]).symlink_to(outside)
            try:
                reopen(str(copy))
            except DataError as exc:
                kinds = {getattr(p, "kind", None) for p in getattr(exc, "problems", ())}
                if "outside-root" not in kinds:
                    raise AssertionError(f"a clip linked out of the root was refused, but not as outside-root: "
                                         f"{str(exc).splitlines()[0]}") from None
                return
            raise AssertionError(f"listed file {files[0]!r} made a symbolic link to {outside} (outside the root) "
                                 "was accepted; build the dataset on asczoo.data.ClipDataset, which refuses it")

    suite.run("interface", interface)
    suite.run("items", items_check)
    suite.run("determinism", determinism)
    suite.run("collate", collate)
    suite.run("paths", paths)
    return suite.finish()


@isolated_rng
def check_augmentation(
    augmentation: Callable[..., Any] | str,
    *,
    options: Mapping[str, Any] | None = None,
    shape: Sequence[int] = (3, 4, 3, 16, 12),
    num_classes: int = 4,
    skip: Iterable[str] = (),
):
    """Check a batch augmentation: ``factory(**options)`` -> ``aug(features (B, N, 3, F, T), targets (B, K))
    -> (features, targets)``.

    Checks: ``signature``, ``description``, ``shapes`` (shapes and dtypes kept, finite), ``targets``
    (still class probabilities: non-negative rows summing to 1, for one-hot and soft targets),
    ``inputs_untouched`` (the caller's tensors are not modified in place), ``reproducible`` (the same
    seeds give the same result), ``batch_of_one``, ``cuda`` (stays on the device).
    """
    factory, subject, name = resolve("augmentation", augmentation)
    options = dict(options or {})
    suite = Suite(subject + (f" with options {options}" if options else ""), AUGMENTATION_CHECKS, skip)

    def build() -> Callable[..., Any]:
        aug = factory(**options)
        if not callable(aug):
            raise AssertionError(f"the factory returned {type(aug).__name__}, not a callable")
        return aug

    def batch(b: int = shape[0], seed: int = 0, soft: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        x = randn(b, *shape[1:], seed=seed)
        if soft:
            targets = torch.softmax(randn(b, num_classes, seed=seed + 1), dim=1)
        else:
            targets = torch.nn.functional.one_hot(torch.arange(b) % num_classes, num_classes).float()
        return x, targets

    def apply(aug: Callable[..., Any], x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = aug(x, y)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise AssertionError(f"must return (features, targets), got {type(out).__name__}")
        return out

    def seeded(seed: int) -> None:
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            import numpy

            numpy.random.seed(seed)
        except ImportError:
            pass

    def shape_check() -> None:
        x, y = batch()
        fx, fy = apply(build(), x.clone(), y.clone())
        assert_shape(fx, x.shape, "augmented features")
        assert_shape(fy, y.shape, "augmented targets")
        if fx.dtype != x.dtype or fy.dtype != y.dtype:
            raise AssertionError(f"dtypes changed: features {fx.dtype}, targets {fy.dtype}")
        assert_finite(fx, "augmented features")

    def targets() -> None:
        aug = build()
        for soft in (False, True):
            x, y = batch(seed=2, soft=soft)
            for trial in range(3):
                seeded(trial)
                _, fy = apply(aug, x.clone(), y.clone())
                if (fy < 0).any() or not torch.allclose(fy.sum(dim=1), torch.ones(fy.shape[0]), atol=1e-4):
                    kind = "soft" if soft else "one-hot"
                    raise AssertionError(f"targets are no longer class probabilities (from {kind} targets): {fy}")

    def untouched() -> None:
        x, y = batch(seed=3)
        x0, y0 = x.clone(), y.clone()
        seeded(0)
        apply(build(), x, y)
        if not torch.equal(x, x0) or not torch.equal(y, y0):
            raise AssertionError("the augmentation modified the caller's tensors in place")

    def reproducible() -> None:
        x, y = batch(seed=4)
        aug = build()
        seeded(7)
        a = apply(aug, x.clone(), y.clone())
        seeded(7)
        b = apply(aug, x.clone(), y.clone())
        if not (torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])):
            raise AssertionError("the same seeds (torch, random, numpy) give different results")

    def batch_of_one() -> None:
        x, y = batch(b=1, seed=5)
        fx, fy = apply(build(), x, y)
        assert_shape(fx, x.shape, "augmented features of a batch of one")
        assert_shape(fy, y.shape, "augmented targets of a batch of one")

    def cuda() -> None:
        if not torch.cuda.is_available():
            raise SkipCheck("no CUDA device")
        x, y = batch(seed=6)
        fx, fy = apply(build(), x.cuda(), y.cuda())
        if fx.device.type != "cuda" or fy.device.type != "cuda":
            raise AssertionError(f"outputs moved to {fx.device} / {fy.device}")

    suite.run("signature", lambda: check_signature(factory, options, where=suite.report.subject))
    suite.run("description", lambda: check_description("augmentation", name))
    suite.run("shapes", shape_check)
    suite.run("targets", targets)
    suite.run("inputs_untouched", untouched)
    suite.run("reproducible", reproducible)
    suite.run("batch_of_one", batch_of_one)
    suite.run("cuda", cuda)
    return suite.finish()
