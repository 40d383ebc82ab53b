"""TOML recipes: :mod:`.files` reads files (``extends``, merging, ``--set``, where each value came from),
:mod:`.load` validates the whole recipe into a :class:`~norton_core.recipe.load.Recipe`, :mod:`.options` declares
and checks component options, :mod:`.tables` holds the engine's own tables (``[run]``, ``[train]``, ...),
:mod:`.shipped` finds the recipes installed with norton, and :mod:`.cli` is ``norton recipes`` / ``validate``.
"""
