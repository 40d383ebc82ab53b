"""Built-in evaluation tasks: YouCook2 clip and video-paragraph retrieval, HTM-Align grounding, MSR-VTT retrieval,
MSR-VTT-QA multiple choice, DiDeMo moment retrieval, COIN action segmentation, CrossTask step localization.

Each task is an :class:`~norton_core.plugin.interfaces.Evaluator` registered by name; ``norton evaluate`` and the training
engine run them through :func:`norton_core.evaluation.run_evaluation`. No torch import happens here: the modules
import it inside ``evaluate``.
"""

from __future__ import annotations

from norton_core import hookimpl

from .coin import COIN
from .crosstask import CrossTask
from .didemo import DiDeMo
from .htm_align import HTMAlign
from .msrvtt import MSRVTT
from .msrvtt_qa import MSRVTTQA
from .youcook2 import YouCook2Clip, YouCook2Video

EVALUATORS = (YouCook2Clip, YouCook2Video, HTMAlign, MSRVTT, MSRVTTQA, DiDeMo, COIN, CrossTask)


@hookimpl
def norton_register_evaluators(register):  # noqa: ANN001, ANN201 - pluggy passes the Register
    for cls in EVALUATORS:
        register(cls)
