"""Issue 24 item 4: every size a recipe or config file can set is checked before anything is allocated,
and the refusal names the limit (a width of 10**9 would otherwise ask for tens of gigabytes)."""

from __future__ import annotations

import pytest

from asczoo import plugins


@pytest.mark.parametrize("kind, name, options, limit", [
    ("position_encoding", "augmented-mlp", {"width": 10**9}, "from 1 to 4096 (MAX_WIDTH)"),
    ("position_encoding", "augmented-mlp", {"width": 0}, "from 1 to 4096 (MAX_WIDTH)"),
    ("relation_block", "atresn", {"channels": 16, "position_encoding_options": {"width": 10**9}},
     "from 1 to 4096 (MAX_WIDTH)"),
    ("relation_block", "atresn", {"channels": 16, "k": 10**9}, "from 1 to 1024 (MAX_K)"),
])
def test_relation_sizes_are_bounded_before_allocating(kind, name, options, limit):
    with pytest.raises(ValueError, match=rf"got 1000000000|got 0") as caught:
        plugins.get_part(kind, name).factory(**options)
    assert limit in str(caught.value) and "\n" not in str(caught.value)


def test_the_position_module_itself_bounds_its_width():
    from asczoo_plugins.relation.position_encoding import AugmentedPosition

    with pytest.raises(ValueError, match=r"mlp_width must be an integer from 1 to 4096 \(MAX_WIDTH\), got 1000000000"):
        AugmentedPosition(mlp_width=10**9)


@pytest.mark.parametrize("options, message", [
    ({"seconds": 1e9}, r"seconds = 1000000000.0; expected a number in \(0, 600\]"),
    ({"seconds": float("nan")}, r"seconds = nan; expected a number in \(0, 600\]"),
    ({"sample_rate": 10**9}, r"sample_rate = 1000000000; expected an integer in \[1000, 384000\]"),
    ({"clips": 10**12}, r"clips = 1000000000000; expected an integer in \[20, 1e\+06\]"),
    ({"clips": 3}, r"clips = 3; expected an integer in \[20, 1e\+06\] "
                   r"\(fewer are too few for 10 classes: 2 per class at least\)"),
    ({"workers": 10**6}, r"workers = 1000000; expected an integer in \[0, 256\]"),
    ({"evaluate_fraction": 1.0}, r"evaluate_fraction = 1.0; expected a number in \(0, 1\)"),
])
def test_synth_sizes_are_bounded_before_anything_is_written(tmp_path, options, message):
    from asczoo.data.synth import synthesize

    with pytest.raises(ValueError, match=rf"^synth: {message}"):
        synthesize(tmp_path / "out", progress=False, **options)
    assert not (tmp_path / "out").exists()
