"""Built-in plugin ``relation``: the relation blocks ATReSN, TReSN and SeNoT and their parts.

Registers, exactly as a third-party package would:

* relation blocks ``atresn``, ``tresn``, ``senot`` (:mod:`.relation_block`);
* aggregators ``max``, ``mean``, ``attentive`` (:mod:`.aggregators`);
* position encodings ``none``, ``relative``, ``augmented``, ``augmented-mlp``
  (:mod:`.position_encoding`).

The grouper (:mod:`.grouper`) and the pair encoder (:mod:`.pair_encoder`) are configured through
the blocks' options rather than registered: every block has them.
"""

from __future__ import annotations

from asczoo import hookimpl
from asczoo_plugins.relation import aggregators, position_encoding, relation_block


@hookimpl
def asczoo_register_relation_blocks(register):
    register("atresn", relation_block.atresn)
    register("tresn", relation_block.tresn)
    register("senot", relation_block.senot)


@hookimpl
def asczoo_register_aggregators(register):
    register("max", aggregators.max_pool)
    register("mean", aggregators.mean_pool)
    register("attentive", aggregators.attentive_pool)


@hookimpl
def asczoo_register_position_encodings(register):
    register("none", position_encoding.no_position)
    register("relative", position_encoding.relative_position)
    register("augmented", position_encoding.augmented_position)
    register("augmented-mlp", position_encoding.augmented_position_mlp)
