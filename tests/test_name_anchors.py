"""Names are matched whole: a trailing newline (which a regex "$" lets through) is refused everywhere."""

from __future__ import annotations

import pytest

from asczoo import names, scaffold
from asczoo.deploy import dcase_package


@pytest.mark.parametrize("pattern, good", [
    (dcase_package.NAME_RE, "Schmid_CPJKU_task1_1"),
    (names.NAME_RE, "atresn-net-resnet18"),
    (names.REPO_ID_RE, "org/atresn-net-resnet18"),
    (scaffold._NAME_RE, "my-block"),
])
def test_a_trailing_newline_is_not_part_of_a_valid_name(pattern, good):
    assert pattern.match(good)
    assert not pattern.match(good + "\n")
    assert not pattern.match(good + "\n\n")


def test_package_refuses_a_submission_name_with_a_trailing_newline(tmp_path):
    with pytest.raises(ValueError, match="expected a DCASE submission label"):
        dcase_package.write_package("Schmid_CPJKU_task1_1\n", {}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_part_names_with_a_trailing_newline_are_refused():
    assert names.is_name("resnet18")
    assert not names.is_name("resnet18\n")
