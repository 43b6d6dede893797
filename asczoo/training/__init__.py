"""Training: runtime, batches, the training loop, checkpoints, evaluation and training runs.

Re-exports only: :func:`train` (:mod:`asczoo.training.runs`), :func:`finetune`
(:mod:`asczoo.training.finetuning`) and :func:`evaluate` (:mod:`asczoo.training.evaluation`).
"""

from asczoo.training.evaluation import Evaluation, evaluate
from asczoo.training.finetuning import finetune
from asczoo.training.runs import RESUMABLE_CHANGES, StageResult, TrainResult, train

__all__ = ["Evaluation", "RESUMABLE_CHANGES", "StageResult", "TrainResult", "evaluate", "finetune", "train"]
