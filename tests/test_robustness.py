"""Hostile inputs (issue 14, part B): non-finite audio, weights, statistics and hyper-parameters; sizes
from headers and configs; YAML aliases; special files; plugins that exit; one-line CLI errors."""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import TINY_FRONTEND, make_dcase_tree, one_thread, write_clip  # noqa: F401 - fixture

from asczoo.data import audio
from asczoo.data.audio import AudioError, audio_info, read_audio
from asczoo.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def write_float_wav(path: Path, values: np.ndarray, rate: int = 8000) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), values.astype(np.float32), rate, subtype="FLOAT")
    return path


def set_wav_rate(path: Path, rate: int) -> None:
    """Rewrite a plain RIFF/WAVE header's sample rate (and byte rate): what a hostile header claims."""
    data = bytearray(path.read_bytes())
    fmt = data.index(b"fmt ")
    channels, = struct.unpack_from("<H", data, fmt + 10)
    bits, = struct.unpack_from("<H", data, fmt + 22)
    struct.pack_into("<II", data, fmt + 12, rate, rate * channels * bits // 8)
    path.write_bytes(bytes(data))


def clip(seconds: float = 1.0, rate: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([0.2 * np.sin(2 * np.pi * 440 * t)] * 2, axis=1)


# -- audio: values ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, expected", [(np.nan, "NaN"), (np.inf, "Inf"), (1e30, "peak sample value")])
def test_read_audio_refuses_non_finite_and_huge_samples(tmp_path, bad, expected):
    values = clip()
    values[100, 0] = bad
    if bad == 1e30:
        values[:] = 1e30
    path = write_float_wav(tmp_path / "x.wav", values)
    with pytest.raises(AudioError, match=expected) as info:
        read_audio(path)
    assert str(path) in str(info.value)
    waveform, _ = read_audio(path, check_values=False)  # check-data reads the values itself
    assert waveform.shape == (2, 8000)


def test_amplitude_limit_leaves_loud_float_audio_alone(tmp_path):
    """Float WAVs a little over full scale are real (mastering headroom); only +60 dB is refused."""
    path = write_float_wav(tmp_path / "loud.wav", clip() * 40)
    waveform, _ = read_audio(path)
    assert float(waveform.abs().max()) == pytest.approx(8.0, rel=1e-3)


# -- audio: header sizes and special files ------------------------------------------------------------------

def test_header_claiming_1_hz_is_refused_before_reading(tmp_path, monkeypatch):
    path = write_float_wav(tmp_path / "slow.wav", clip())
    set_wav_rate(path, 1)
    for fn in (audio_info, read_audio):
        with pytest.raises(AudioError, match=r"slow\.wav: the header's sample rate is 1 Hz; expected 1000 to 384000"):
            fn(path)


def test_sample_count_limit(tmp_path, monkeypatch):
    path = write_float_wav(tmp_path / "long.wav", clip())
    monkeypatch.setattr(audio, "MAX_SAMPLES", 1000)
    with pytest.raises(AudioError, match=r"8000 frames x 2 channels = 16000 samples; at most 1000") as info:
        read_audio(path)
    assert info.value.kind == "limits"


def test_header_claiming_more_frames_than_the_file_holds_is_refused(tmp_path):
    """Issue 23: the frame limit guards against absurd headers, not long files: a 256-byte FLAC whose
    STREAMINFO claims 2**36 frames is refused by every reader before decoding; a genuine long recording
    (beyond what read_audio takes whole) opens as a stream."""
    import soundfile as sf

    path = tmp_path / "liar.flac"
    sf.write(str(path), np.zeros((8000, 2)), 8000)
    data = bytearray(path.read_bytes())
    packed = int.from_bytes(data[18:26], "big")  # rate (20 bits), channels, bits, total frames (36 bits)
    data[18:26] = (packed | (2**36 - 1)).to_bytes(8, "big")
    path.write_bytes(bytes(data))
    for reader in (audio_info, read_audio, lambda p: audio.AudioStream(p).__enter__()):
        with pytest.raises(AudioError, match=r"liar\.flac: the header declares 68719476735 frames x 2 channels, "
                                             r"more than its \d+ bytes can hold") as info:
            reader(path)
        assert info.value.kind == "limits"


def test_long_files_stream_past_the_whole_read_limit(tmp_path, monkeypatch):
    path = write_float_wav(tmp_path / "long.wav", clip())
    monkeypatch.setattr(audio, "MAX_SAMPLES", 1000)
    with pytest.raises(AudioError, match="at most 1000 are read whole"):
        read_audio(path)
    assert audio_info(path).frames == 8000
    with audio.AudioStream(path) as stream:
        blocks = list(stream.blocks(3000))
    assert [b.shape for b in blocks] == [(2, 3000), (2, 3000), (2, 2000)]
    assert torch.equal(torch.cat(blocks, dim=-1), torch.from_numpy(clip().T.astype(np.float32)))


def test_fifo_is_not_opened(tmp_path):
    fifo = tmp_path / "x.wav"
    os.mkfifo(fifo)
    # Without the check the reader blocks in open() until a writer comes: unblock it after a while, so a
    # regression fails (with the wrong message) instead of hanging the suite.
    def unblock():
        with open(fifo, "wb"):
            pass

    timer = threading.Timer(5.0, unblock)
    timer.start()
    try:
        for fn in (audio_info, read_audio):
            with pytest.raises(AudioError, match=r"x\.wav: is a FIFO \(named pipe\), not a regular audio file"):
                fn(fifo)
    finally:
        timer.cancel()
    with pytest.raises(AudioError, match="is a folder"):
        read_audio(tmp_path)


def test_predict_cli_refuses_bad_audio_by_name(tmp_path, capsys):
    from model_fixtures import tiny_model

    folder = tmp_path / "model"
    tiny_model(seed=3).save_pretrained(folder)
    bad = clip(2.0)
    bad[5, 1] = np.nan
    write_float_wav(tmp_path / "nan.wav", bad)
    write_float_wav(tmp_path / "huge.wav", np.full((16000, 2), 1e30))
    write_float_wav(tmp_path / "slow.wav", clip(2.0))
    set_wav_rate(tmp_path / "slow.wav", 1)
    os.mkfifo(tmp_path / "fifo.wav")
    out = tmp_path / "sub.tsv"
    files = [str(tmp_path / n) for n in ("nan.wav", "huge.wav", "slow.wav", "fifo.wav")]
    assert main(["predict", str(folder), *files, "-o", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "skipped" in err and "nan.wav: 1 NaN and 0 Inf samples" in err
    assert "huge.wav: peak sample value 1e+30" in err
    assert "slow.wav: the header's sample rate is 1 Hz" in err
    assert "fifo.wav: is a FIFO" in err
    assert "nan\t" not in out.read_text()  # no row with NaN scores was written


# -- check-data and extract ----------------------------------------------------------------------------

@pytest.fixture
def bad_tree(tmp_path):
    """A DCASE tree where one training clip is 1e30 loud and one claims 1 Hz."""
    root = tmp_path / "data"
    lists = make_dcase_tree(root, rate=8000)
    loud, slow = lists["train"][0], lists["train"][1]
    write_float_wav(root / loud, np.full((8000, 2), 1e30))
    set_wav_rate(root / slow, 1)
    return root, loud, slow


def test_check_data_errors_on_loud_and_1_hz_clips(bad_tree, capsys):
    root, loud, slow = bad_tree
    rc = main(["check-data", str(root), "--dataset", "dcase2019-task1a"])
    out = capsys.readouterr().out
    assert rc == 1
    assert f"ERROR   {loud}: amplitude: peak sample value 1e+30" in out
    assert f"ERROR   {slow}: limits: the header's sample rate is 1 Hz" in out


def test_extract_skip_bad_skips_and_names_the_files(bad_tree, tmp_path):
    from asczoo.data.feature_cache import extract

    root, loud, slow = bad_tree
    info = extract("dcase2019-task1a", root, frontend=TINY_FRONTEND, cache_dir=tmp_path / "cache", skip_bad=True,
                   progress=False)
    assert sorted(p.path for p in info.skipped) == sorted([loud, slow])
    assert bool(torch.isfinite(info.mean).all() and torch.isfinite(info.std).all())


# -- hyper-parameters --------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("stages.0.optimizer.lr=.nan", r"key 'lr' is nan; expected a finite number"),
    ("stages.0.optimizer.lr=.inf", r"key 'lr' is inf; expected a finite number"),
    ("stages.0.optimizer.weight_decay=.nan", r"key 'weight_decay' is nan; expected a finite number"),
    ("stages.0.optimizer.momentum=-5", r"key 'momentum' must be in \[0, 1\], got -5"),
    ("stages.0.schedule.gamma=-3", r"key 'gamma' must be a positive number, got -3"),
    ("stages.0.optimizer.dampening=2", r"key 'dampening' must be in \[0, 1\], got 2"),
])
def test_training_recipe_refuses_non_finite_and_impossible_hyperparameters(override, message):
    from asczoo.recipes import training_recipes
    from asczoo.recipes.schema import RecipeError

    with pytest.raises(RecipeError, match=r"stages\.0.*" + message):
        training_recipes.load("quickstart", [override])


def test_model_recipe_refuses_nan_arguments(tiny):
    import asczoo
    from asczoo.recipes.schema import RecipeError

    with pytest.raises(RecipeError, match=r"section 'head': key 'dropout' is nan; expected a finite number"):
        asczoo.create_model("resnet18-3d", overrides={**tiny, "head": {"dropout": float("nan")}})


# -- weights ---------------------------------------------------------------------------------------------

def test_model_with_nan_weights_is_refused(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from asczoo.hub import ModelFormatError
    from asczoo.models.pretrained import from_pretrained
    from model_fixtures import tiny_model

    folder = tmp_path / "model"
    tiny_model(seed=3).save_pretrained(folder)
    state = load_file(str(folder / "model.safetensors"))
    name = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelFormatError, match=rf"model\.safetensors: 1 tensor\(s\) hold NaN or Inf values: {name}"):
        from_pretrained(folder)
    write_float_wav(tmp_path / "a.wav", clip(2.0))
    assert main(["predict", str(folder), str(tmp_path / "a.wav"), "-o", str(tmp_path / "s.tsv"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("asczoo predict: error:") and "NaN or Inf" in err and len(err.splitlines()) == 1


# -- YAML aliases -------------------------------------------------------------------------------------------

def alias_bomb(key: str = "notes", levels: int = 9) -> str:
    """The billion-laughs pattern as a YAML value: 9**levels strings after expansion, ~600 bytes."""
    lines = [f'  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return f"{key}:\n" + "\n".join(lines) + "\n"


def test_safe_yaml_bounds_alias_expansion_but_keeps_plain_aliases():
    import yaml

    from asczoo import safe_yaml

    assert safe_yaml.safe_load("a: &x {b: 1}\nc: *x\n") == {"a": {"b": 1}, "c": {"b": 1}}
    with pytest.raises(safe_yaml.AliasBombError, match="aliases expand to more than 100000 nodes"):
        safe_yaml.safe_load(alias_bomb())
    with pytest.raises(yaml.YAMLError, match="recursive alias"):
        safe_yaml.safe_load("a: &a [1, *a]")


def test_registry_file_with_alias_bomb_is_refused(tmp_path, monkeypatch, capsys):
    from asczoo import recipes

    registry = tmp_path / "bomb.yaml"
    body = "\n".join("    " + line for line in alias_bomb().splitlines())
    registry.write_text("version: 1\nmodels:\n  bomb:\n    extends: resnet18-3d\n" + body + "\n")
    assert len(registry.read_bytes()) < 1000
    monkeypatch.setenv("ASCZOO_REGISTRY", str(registry))
    recipes.invalidate()  # re-read the environment
    assert main(["list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"asczoo list: error: {registry}: not valid YAML: aliases expand to more than")


def test_set_value_with_alias_bomb_is_refused():
    from asczoo.recipes.schema import RecipeError
    from asczoo.recipes.overrides import parse_override

    bomb = "[" + ", ".join(["&a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + ["*a"] * 3) + "]"
    assert len(parse_override(f"notes={bomb}")["notes"]) == 4
    nested = "{l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol], " + ", ".join(
        f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)) + "}"
    with pytest.raises(RecipeError, match="not valid YAML: aliases expand"):
        parse_override(f"notes={nested}")


# -- config.json: sizes and hostile keys --------------------------------------------------------------------

@pytest.fixture
def saved_folder(tmp_path):
    from model_fixtures import tiny_model

    folder = tmp_path / "model"
    tiny_model(seed=3).save_pretrained(folder)
    return folder


def edit_config(folder: Path, section: str, **values) -> None:
    import json

    path = folder / "config.json"
    config = json.loads(path.read_text())
    target = config["frontend"] if section == "frontend" else config["recipe"][section]
    target.update(values)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("section, values, message", [
    ("backbone", {"channels": [10**9] * 4}, r"timm-resnet: channels has 1000000000; expected integers from 1 to 2048"),
    ("backbone", {"in_chans": 10**9}, r"in_chans has 1000000000; expected integers from 1 to 64"),
    ("frontend", {"n_fft": 2**31}, r"n_fft = 2147483648 is invalid; expected an integer from 2 to 65536"),
    ("frontend", {"sample_rate": 10**9}, r"sample_rate = 1000000000 is invalid; expected an integer from 1000 to 384000"),
    ("inflator", {"temporal_kernel": 10**9 + 1}, r"temporal_kernel must be an odd positive integer, at most 63"),
])
def test_config_sizes_are_bounded_before_building(saved_folder, section, values, message):
    from asczoo.hub import ModelFormatError
    from asczoo.models.pretrained import from_pretrained

    edit_config(saved_folder, section, **values)
    with pytest.raises(ModelFormatError, match=r"config\.json.*" + message):
        from_pretrained(saved_folder)


@pytest.mark.parametrize("values, key", [
    ({"global_pool": "avg"}, "global_pool"), ({"num_classes": 10}, "num_classes"), ({"block": "os.system"}, "block"),
])
def test_hostile_backbone_keys_name_the_key(saved_folder, values, key, capsys):
    from asczoo.recipes.schema import RecipeError
    from asczoo.models.pretrained import from_pretrained

    edit_config(saved_folder, "backbone", **values)
    with pytest.raises(RecipeError, match=rf"section 'backbone': unknown key '{key}'; this part accepts: arch, channels"):
        from_pretrained(saved_folder)
    rc = main(["train", "quickstart", "--set", f"stages.0.overrides.backbone.{key}=x", "--out",
               str(saved_folder.parent / "run"), "--data", str(saved_folder.parent / "data")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and f"unknown key '{key}'" in err and len(err.splitlines()) == 1, err


# -- plugins that exit ------------------------------------------------------------------------------------

@pytest.fixture
def exiting_plugins(tmp_path, monkeypatch):
    from test_plugins import _fake_distribution

    from asczoo import plugins

    _fake_distribution(tmp_path, "asczoo-exits", {"exits": "exits_mod", "interrupts": "interrupts_mod"}, {
        "exits_mod": "import sys\nsys.exit(3)\n",
        "interrupts_mod": "raise KeyboardInterrupt\n",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.reset()
    yield tmp_path
    plugins.reset()


def test_plugin_calling_sys_exit_or_raising_keyboardinterrupt_is_isolated(exiting_plugins, monkeypatch):
    import subprocess
    import sys

    from asczoo import plugins

    with pytest.warns(RuntimeWarning, match="exits"):
        records = {r.name: r for r in plugins.plugin_records()}
    assert records["exits"].status == "failed" and records["exits"].error == "SystemExit: 3"
    assert records["interrupts"].status == "failed" and records["interrupts"].error == "KeyboardInterrupt"
    assert records["timm-resnet"].status == "loaded"
    monkeypatch.setenv("ASCZOO_STRICT_PLUGINS", "1")
    plugins.reset()
    with pytest.raises(plugins.PluginError, match=r"'exits'.*SystemExit: 3 \[ASCZOO_STRICT_PLUGINS=1\]"):
        plugins.plugin_records()
    monkeypatch.delenv("ASCZOO_STRICT_PLUGINS")
    result = subprocess.run([sys.executable, "-m", "asczoo", "plugins"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(exiting_plugins)}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "SystemExit: 3" in result.stdout and "KeyboardInterrupt" in result.stdout and "[failed]" in result.stdout
    assert result.stderr.splitlines() == [  # one line each, no source line of warnings.warn under it
        "asczoo: warning: asczoo plugin 'exits' (entry point exits_mod (asczoo-exits)) failed and was skipped: "
        "SystemExit: 3",
        "asczoo: warning: asczoo plugin 'interrupts' (entry point interrupts_mod (asczoo-exits)) failed and was "
        "skipped: KeyboardInterrupt"]


# -- the command line: one line per failure, OpenMP threads that sleep --------------------------------------

def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    from asczoo.commands import list as list_command

    def boom(args):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(list_command, "run", boom)
    monkeypatch.delenv("ASCZOO_DEBUG", raising=False)
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert err == ("asczoo list: error: TypeError: unsupported operand (an unexpected error; ASCZOO_DEBUG=1 shows "
                   "the traceback)\n")
    monkeypatch.setenv("ASCZOO_DEBUG", "1")
    with pytest.raises(TypeError, match="unsupported operand"):
        main(["list"])


def test_yaml_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrecipes:\n  x: [unclosed\n")
    assert main(["train", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("asczoo train: error:") and "not valid YAML" in err and "Traceback" not in err


def omp_spin_count(command: list[str], env: dict[str, str]) -> str:
    """GOMP_SPINCOUNT as libgomp (loaded with torch) reports it in a fresh process: 0 when threads sleep."""
    import re
    import subprocess

    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**env, "OMP_DISPLAY_ENV": "VERBOSE", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    found = re.search(r"GOMP_SPINCOUNT = '(\d+)'", result.stderr)
    assert found, result.stderr
    return found.group(1)


def test_cli_shortens_openmp_spinning_unless_the_user_chose(tmp_path):
    from asczoo.cli import SPIN_COUNT

    import shutil
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    script = shutil.which("asczoo", path=str(Path(sys.executable).parent))
    assert script, "the asczoo console script is not installed next to this Python"
    # libgomp's default (no OMP_WAIT_POLICY) spins 300000 times, ACTIVE far more; PASSIVE 0 times
    assert omp_spin_count([sys.executable, "-m", "asczoo", "list"], env) == str(SPIN_COUNT)
    assert omp_spin_count([script, "list"], env) == str(SPIN_COUNT)
    assert omp_spin_count([script, "list"], {**env, "OMP_WAIT_POLICY": "PASSIVE"}) == "0"
    assert omp_spin_count([script, "list"], {**env, "GOMP_SPINCOUNT": "123"}) == "123"


def test_extract_refuses_non_finite_features(bad_tree, tmp_path, monkeypatch):
    """Audio allowed by a (here raised) amplitude limit but overflowing the frontend is skipped by name."""
    from asczoo.data import checks as data_checks
    from asczoo.data.feature_cache import extract

    root, loud, slow = bad_tree
    monkeypatch.setattr(data_checks, "MAX_AMPLITUDE", 1e38)
    info = extract("dcase2019-task1a", root, frontend=TINY_FRONTEND, cache_dir=tmp_path / "cache", skip_bad=True,
                   progress=False)
    skipped = {p.path: p for p in info.skipped}
    assert skipped[loud].kind == "non-finite" and "features hold NaN or Inf" in skipped[loud].message
    assert bool(torch.isfinite(info.mean).all() and torch.isfinite(info.std).all())


def test_extract_cli_skip_bad_names_the_1_hz_clip(bad_tree, tmp_path, capsys):
    root, loud, slow = bad_tree
    frontend = [f"--frontend={k}={v}" for k, v in TINY_FRONTEND.items() if k != "plugin"]
    argv = ["extract", str(root), *frontend, "--cache", str(tmp_path / "cache"), "--no-progress"]
    assert main(argv) == 1  # without --skip-bad: an error listing both files
    err = capsys.readouterr().err
    assert f"{slow}: limits: the header's sample rate is 1 Hz" in err and f"{loud}: amplitude" in err
    assert main([*argv, "--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert f"skipped ERROR   {slow}: limits: the header's sample rate is 1 Hz; expected 1000 to 384000 Hz" in err


def test_predict_waveform_refuses_nan_and_impossible_rates():
    from model_fixtures import tiny_model

    model = tiny_model(seed=3)
    waveform = torch.zeros(2, 16000)
    waveform[0, 3] = float("nan")
    with pytest.raises(AudioError, match=r"predict\(waveform\): 1 NaN and 0 Inf samples"):
        model.predict(waveform, 8000)
    with pytest.raises(ValueError, match=r"sample_rate is 1; expected 1000 to 384000 Hz"):
        model.predict(torch.zeros(2, 16000), 1)


def test_init_from_weights_with_nan_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    import asczoo
    from asczoo.hub import ModelFormatError
    from asczoo.testing import tiny_overrides
    from model_fixtures import tiny_model

    folder = tmp_path / "model"
    tiny_model(seed=3).save_pretrained(folder)
    state = load_file(str(folder / "model.safetensors"))
    name = next(k for k in sorted(state) if k.startswith("backbone.") and state[k].is_floating_point())
    state[name][0] = float("inf")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ModelFormatError, match=rf"init_from: .*model\.safetensors: 1 tensor\(s\) hold NaN or Inf values: {name}"):
        asczoo.create_model("atresn-net-resnet18", overrides=tiny_overrides(), init_from=folder)
