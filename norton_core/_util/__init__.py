"""Private helpers shared across rooms: atomic files (:mod:`.files`), the pickle and checkpoint guards
(:mod:`.safe_pickle`, :mod:`.safe_checkpoint`), numba set-up (:mod:`.compiled`), text-encoder resolution
(:mod:`.text_encoders`) and crash-test fault points (:mod:`.faults`). Plugins reach what they need of these through
:mod:`norton_core`, never here."""
