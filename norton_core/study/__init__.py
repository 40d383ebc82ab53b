"""Paired-arm experiments (``norton study FILE``) and ground-truth diagnostics of Norton's mechanisms.

:mod:`.spec` reads study files, :mod:`.runner` trains their cells resumably (:mod:`.parallel` several at a time),
:mod:`.provenance` decides whether a finished cell may be reused, :mod:`.stats` gives means with 95 % intervals and
paired differences, :mod:`.report` writes the markdown report and plots, :mod:`.diagnostics` measures
the prompt bucket, the video-paragraph plan and the faulty-negative plan against the generator's ground truth.
"""

from __future__ import annotations
