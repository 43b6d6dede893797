"""Testing helpers for asczoo models and plugins: public API, and what a plugin's own tests call.

* :data:`TINY_OVERRIDES` / :func:`tiny_overrides`: recipe overrides that make any registry model small
  enough for a CPU unit test.
* The conformance suite: one function per kind of part, each a plain function that runs a list of named
  checks and raises :class:`ConformanceError` (an ``AssertionError``) listing every failed one, or
  returns a :class:`ConformanceReport` of what passed and what was skipped and why::

      from asczoo.testing import check_relation_block

      def test_my_block():
          check_relation_block("my-block")                 # a registered name, or the factory itself

  ============================  ================================================================
  ``check_relation_block``      relation blocks (``asczoo_register_relation_blocks``)
  ``check_aggregator``          neighbourhood aggregators
  ``check_position_encoding``   position encodings
  ``check_backbone``            2D backbones
  ``check_inflator``            inflators (2D backbone -> segment sequences)
  ``check_head``                classification heads
  ``check_frontend``            audio frontends
  ``check_dataset``             dataset instances
  ``check_augmentation``        batch augmentations
  ``check_plugin_imports``      a package's source uses only public asczoo API
  ============================  ================================================================

  The built-in plugins are checked by the same calls in asczoo's own tests.
"""

from __future__ import annotations

from asczoo.parts import PART_KINDS
from asczoo.testing.backbone import check_backbone, check_inflator
from asczoo.testing.data import check_augmentation, check_dataset, check_frontend
from asczoo.testing.head import check_head
from asczoo.testing.model import MODEL_CHECKS, check_model
from asczoo.testing.imports import PUBLIC_API, check_plugin_imports, plugin_import_problems
from asczoo.testing.relation import check_aggregator, check_position_encoding, check_relation_block
from asczoo.testing.suite import ConformanceError, ConformanceReport, ConformanceWarning
from asczoo.testing.tiny import TINY_OVERRIDES, tiny_overrides

#: the conformance check of each kind of part, as the table :data:`asczoo.parts.PART_KINDS` names it
CHECKS = {kind.name: globals()[kind.check] for kind in PART_KINDS}

__all__ = [
    "TINY_OVERRIDES", "tiny_overrides", "CHECKS",
    "ConformanceError", "ConformanceReport", "ConformanceWarning",
    "check_relation_block", "check_aggregator", "check_position_encoding",
    "check_backbone", "check_inflator", "check_head",
    "check_frontend", "check_dataset", "check_augmentation",
    "PUBLIC_API", "check_plugin_imports", "plugin_import_problems", "MODEL_CHECKS", "check_model",
]
