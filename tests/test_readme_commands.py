"""The README's commands work as written: every command of its ``bash``/``console`` blocks and every
inline ```asczoo ...``` span is checked against the CLI's parser, named models and training recipes
exist, ``--set`` overrides validate, and the cheap commands (list, info, plugins, train --list) run.

Placeholders are expanded: ``ROOT``/``DIR`` become folders, ``[--opt]`` is tried without and with the
option, ``a|b`` tries each alternative. Commands of the plugin walkthrough (``asczoo new-plugin``,
``pip install -e asczoo-my-block``...) must also appear in CONTRIBUTING.md, whose blocks
``test_contributing_snippets.py`` runs. Not run here (too slow, or the network): train, extract,
check-data, synth, eval, predict, publish, torchrun. The export line is run as written by
:func:`test_readme_export_command`, on a tiny model saved where the README's training line puts it.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from asczoo.cli import build_parser, main
from data_fixtures import one_thread  # noqa: F401 - a fixture
from model_fixtures import tiny_model

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: commands that are cheap and offline: run in-process, rc 0 expected
RUN = {"list", "info", "plugins"}


def readme_commands() -> list[tuple[int, str, bool]]:
    """``(line, command, inline)`` for each command of the README."""
    found = []
    fence = None
    lines = list(enumerate(README.read_text(encoding="utf-8").splitlines(), start=1))
    joined = []  # a shell line continued with a trailing backslash is one command
    for number, line in lines:
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line.strip())
        else:
            joined.append((number, line))
    for number, line in joined:
        opening = re.match(r"^```(\S*)\s*$", line)
        if opening:
            fence = opening.group(1) if fence is None else None
            continue
        if fence == "console" and line.startswith("$ "):
            found.append((number, _strip_comment(line[2:]), False))
        elif fence == "bash" and line.strip() and not line.lstrip().startswith("#"):
            found.append((number, _strip_comment(line), False))
        elif fence is None:
            found += [(number, span, True) for span in re.findall(r"`(asczoo [a-z][a-z-]*(?: [^`]*)?)`", line)]
    return found


def _strip_comment(line: str) -> str:
    return re.split(r"\s+#\s", line, maxsplit=1)[0].strip()


def variants(command: str, tmp: Path) -> list[list[str]]:
    """argv lists of a README command with its placeholders filled in."""
    optional = re.findall(r"(?<!=)\[([^\]]+)\]", command)  # (key=[1,2]: a YAML list, not an optional part)
    base = re.sub(r"\s*(?<!=)\[[^\]]+\]", "", command)
    texts = [base] + [f"{base} {opt}" for opt in optional]
    out = []
    for text in texts:
        tokens = [t.replace("ROOT", str(tmp / "data")).replace("DIR", str(tmp / "dir")) for t in shlex.split(text)]
        alternatives = [i for i, t in enumerate(tokens) if "|" in t]
        if not alternatives:
            out.append(tokens)
            continue
        i = alternatives[0]
        out += [[*tokens[:i], choice, *tokens[i + 1:]] for choice in tokens[i].split("|")]
    return out


def asczoo_argv(tokens: list[str]) -> list[str] | None:
    """The arguments after ``asczoo`` (also ``python -m asczoo``/``torchrun ... -m asczoo``), or None."""
    if tokens and tokens[0] == "asczoo":
        return tokens[1:]
    for i in range(len(tokens) - 1):
        if tokens[i] == "-m" and tokens[i + 1] == "asczoo":
            return tokens[i + 2:]
    return None


COMMANDS = readme_commands()


def test_the_readme_has_commands():
    assert len([c for c in COMMANDS if not c[2]]) >= 15


def _subparser(command: str):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert command in sub.choices, f"no command {command!r}"
    return sub.choices[command]


@pytest.mark.parametrize("line, command, inline", COMMANDS, ids=[f"L{c[0]}:{c[1][:40]}" for c in COMMANDS])
def test_readme_command(line, command, inline, tmp_path, capsys, monkeypatch):
    from asczoo.models import factory
    from asczoo.recipes import training_recipes

    monkeypatch.chdir(tmp_path)
    for tokens in variants(command, tmp_path):
        argv = asczoo_argv(tokens)
        if argv is None:
            _check_other(tokens, line)
            continue
        if inline:  # a reference in the prose: the command and each option it names exist
            sub = _subparser(argv[0])
            known = {s for a in sub._actions for s in a.option_strings}
            assert all(t in known for t in argv[1:] if t.startswith("-")), f"README line {line}: {command}"
            continue
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"README line {line}: `{command}` does not parse ({argv}): {capsys.readouterr().err}")
        model = getattr(args, "name", None) or getattr(args, "model", None)
        if args.command in ("info", "export") and "." not in model and "/" not in model:
            assert model in factory.list_models(), f"README line {line}: no model {model!r}"
        if args.command == "train" and not args.list:
            sets = [s for s in args.overrides if s != "k=v"]  # k=v: the placeholder of [--set k=v]
            if args.recipe.startswith("my.yaml"):  # "your own recipe file": one as the README means it
                Path("my.yaml").write_text("version: 1\nrecipes:\n  mine: {extends: quickstart, seed: 1}\n")
            training_recipes.load(args.recipe, sets)  # raises RecipeError naming the key
        if args.command in RUN or (args.command == "train" and args.list):
            if args.command == "list" and "my-block" in " ".join(argv):
                continue  # the walkthrough's plugin: installed by test_contributing_snippets
            assert main(argv) == 0, f"README line {line}: `{command}` failed: {capsys.readouterr().err}"


def _check_other(tokens: list[str], line: int) -> None:
    """Commands that are not asczoo's: scripts exist, pip/pytest lines of the walkthrough are in CONTRIBUTING."""
    first = tokens[0]
    if first.startswith(("./", ".ci/")):
        path = ROOT / first
        assert path.is_file() and os.access(path, os.X_OK), f"README line {line}: {first} is not an executable script"
    elif first in ("pip", "python") and any("asczoo-my-block" in t for t in tokens):
        contributing = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
        assert " ".join(tokens).replace("pip install -e", "pip install") in contributing.replace(
            "pip install -e", "pip install"), f"README line {line}: {' '.join(tokens)} is not in CONTRIBUTING.md"
    elif first == "pip" and tokens[1:3] == ["install", "--no-deps"]:  # as CI installs it (the HEAR validator)
        ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").replace('"', "")
        assert f"pip install --no-deps {tokens[3]}" in ci, f"README line {line}: {' '.join(tokens)} is not in .ci/run"
    elif first == "hear-validator":  # the HEAR submission validator, run on a module of asczoo
        import importlib.util

        assert importlib.util.find_spec(tokens[1]) is not None, f"README line {line}: no module {tokens[1]}"
    elif first == "pip":
        assert tokens[1:3] == ["install", "-e"] and (ROOT / tokens[3].split("[")[0].strip("\"'")).exists()
    elif first == "python" and tokens[1:2] == ["-m"]:
        module = tokens[2]
        if module.startswith("benchmarks."):
            assert any((ROOT / "benchmarks").glob("*.py")), f"README line {line}: no benchmarks"
        else:
            assert module == "pytest", f"README line {line}: unexpected python -m {module}"
    else:
        pytest.fail(f"README line {line}: no check for the command {' '.join(tokens)!r}")


def readme_command(name: str, containing: str = "") -> list[str]:
    """The README's ``$ asczoo NAME ...`` line (the one holding ``containing``) as arguments, without its
    comment."""
    lines = [line for line in README.read_text(encoding="utf-8").splitlines()
             if line.startswith(f"$ asczoo {name} ") and containing in line]
    assert len(lines) == 1, f"expected one `asczoo {name}` line with {containing!r} in README.md, found {lines}"
    return shlex.split(re.sub(r"\s+#.*$", "", lines[0]))[3:]


@pytest.mark.usefixtures("one_thread")
def test_readme_export_command(tmp_path, monkeypatch, capsys):
    """`asczoo export atresn-net-resnet18 ...` failed with "no published weights"; the README now exports
    the model a training run saved, which works."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    args = readme_command("export")
    train = readme_command("train", containing="--out")
    out = train[train.index("--out") + 1]
    # what the README's training line leaves behind: RUN/model (any saved model; the smallest is quickest)
    tiny_model("resnet18-segments").save_pretrained(tmp_path / out / "model")
    monkeypatch.chdir(tmp_path)
    assert main(["export", *args]) == 0
    assert (tmp_path / args[-1]).is_file()
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
