"""Plugin loading survives faults: a broken plugin is reported, the rest keep working."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import asczoo
from asczoo import plugins


def _fake_distribution(root, name, entry_points, modules):
    """A minimal installed distribution on ``root`` (dist-info with entry points) plus its modules."""
    # the directory name is normalised (underscores): importlib.metadata reads the name up to the first '-'
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "\n".join(f"{ep} = {target}" for ep, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[asczoo]\n{lines}\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def broken_plugins(tmp_path, monkeypatch):
    _fake_distribution(
        tmp_path,
        "asczoo-broken",
        {"broken-import": "broken_import_mod", "duplicate-head": "duplicate_head_mod", "good-extra": "good_extra_mod"},
        {
            "broken_import_mod": "raise ImportError('this plugin needs a library that is not installed')\n",
            "duplicate_head_mod": """
                from asczoo import hookimpl
                from asczoo_plugins.heads import avgpool_fc

                @hookimpl
                def asczoo_register_heads(register):
                    register("my-fine-head", avgpool_fc)
                    register("avgpool-fc", avgpool_fc)
            """,
            "good_extra_mod": """
                from asczoo import hookimpl
                from asczoo_plugins.heads import segment_mean

                @hookimpl
                def asczoo_register_heads(register):
                    register("extra-head", segment_mean)
            """,
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.reset()
    yield tmp_path
    plugins.reset()


def test_broken_plugins_are_reported_and_the_rest_keep_working(broken_plugins):
    with pytest.warns(RuntimeWarning) as caught:
        records = {r.name: r for r in plugins.plugin_records()}
    messages = " ".join(str(w.message) for w in caught)
    assert "broken-import" in messages and "duplicate-head" in messages
    assert records["broken-import"].status == "failed"
    assert "not installed" in records["broken-import"].error
    dup = records["duplicate-head"]
    assert dup.status == "failed"
    assert "'heads'" in dup.error and "'duplicate-head'" in dup.error  # names both owners
    # the failing plugin left nothing behind, not even its valid first registration
    assert "my-fine-head" not in plugins.list_parts("head")
    assert plugins.get_part("head", "avgpool-fc").owner == "heads"
    assert records["good-extra"].status == "loaded"
    assert "extra-head" in plugins.list_parts("head")
    assert "resnet18-3d" in asczoo.list_models()


def test_strict_mode_raises(broken_plugins, monkeypatch):
    monkeypatch.setenv("ASCZOO_STRICT_PLUGINS", "1")
    plugins.reset()
    with pytest.raises(plugins.PluginError, match="broken-import.*STRICT"):
        plugins.plugin_records()


def test_disabled_plugins_are_skipped(broken_plugins, monkeypatch):
    monkeypatch.setenv("ASCZOO_DISABLE_PLUGINS", "broken-import, duplicate-head")
    plugins.reset()
    records = {r.name: r for r in plugins.plugin_records()}
    assert records["broken-import"].status == "disabled"
    assert records["duplicate-head"].status == "disabled"
    assert records["good-extra"].status == "loaded"


def test_disabling_a_builtin_marks_dependent_recipes_unavailable(monkeypatch):
    monkeypatch.setenv("ASCZOO_DISABLE_PLUGINS", "heads")
    plugins.reset()
    assert asczoo.list_models() == []
    with pytest.raises(KeyError, match="cannot be built here.*no head named 'segment-mean'"):
        asczoo.create_model("resnet18-segments")


def test_in_process_plugin_and_duplicate_refusal():
    class ExtraHeads:
        @asczoo.hookimpl
        def asczoo_register_heads(self, register):
            from asczoo_plugins.heads import avgpool_fc

            register("avgpool-fc", avgpool_fc)

    with pytest.warns(RuntimeWarning, match="registered twice: by plugin 'heads' and by plugin 'dup-test'"):
        assert plugins.register_plugin(ExtraHeads(), "dup-test") is False
    assert plugins.get_part("head", "avgpool-fc").owner == "heads"


def test_registration_is_validated():
    class BadName:
        @asczoo.hookimpl
        def asczoo_register_heads(self, register):
            register("Bad Name!", lambda **kw: None)

    with pytest.warns(RuntimeWarning, match="expected lower-case letters"):
        assert plugins.register_plugin(BadName(), "bad-name") is False


def test_unknown_part_error_says_what_exists_and_what_to_install():
    with pytest.raises(plugins.UnknownPartError, match="no head named 'nope'.*known: avgpool-fc.*Install the plugin"):
        plugins.get_part("head", "nope")


def test_plugins_command_lists_failures(broken_plugins):
    result = subprocess.run(
        [sys.executable, "-m", "asczoo", "plugins"], capture_output=True, text=True,
        env={**__import__("os").environ, "PYTHONPATH": str(broken_plugins)},
    )
    assert result.returncode == 0, result.stderr
    assert "broken-import" in result.stdout and "[failed]" in result.stdout
    assert "not installed" in result.stdout
    assert "timm-resnet" in result.stdout and "[loaded]" in result.stdout


def test_register_plugin_as_the_first_call_in_a_process():
    code = textwrap.dedent("""
        import asczoo
        from asczoo import plugins

        class Extra:
            @asczoo.hookimpl
            def asczoo_register_heads(self, register):
                from asczoo_plugins.heads import avgpool_fc
                register("first-call-head", avgpool_fc)

        assert asczoo.register_plugin(Extra(), "first") is True
        assert plugins.get_part("head", "first-call-head").owner == "first"
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
