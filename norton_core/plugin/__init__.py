"""The plugin host: how components are declared, found and called.

:mod:`.hookspecs` (every ``norton_*`` hook, documented), :mod:`.interfaces` (the component kinds' base classes),
:mod:`.registry` (name -> class, duplicates and unknown names), :mod:`.manager` (loading entry points, the typed
hook calls) and :mod:`.cli` (``norton plugins`` and ``norton describe``).
"""
