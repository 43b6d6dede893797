"""Measuring and looking into a model: complexity as DCASE Task 1 counts it (:mod:`~asczoo.analysis.complexity`)
and which parts of a clip drive a prediction (:mod:`~asczoo.analysis.explain`).

Both take a built ``nn.Module`` and import nothing of asczoo that builds one, so the hub's model cards
and the deployment tools use them from below.
"""
