"""Built-in data sources: ``how2`` (stores prepared with ``norton prepare how2``) and ``synthetic`` (the generated
How2-like dataset, made and prepared on first use into the cache)."""

from __future__ import annotations

from norton_core import hookimpl


@hookimpl
def norton_register_data_sources(register):  # noqa: ANN001 - pluggy passes the Register
    from .sources import How2Source, SyntheticSource

    register(How2Source)
    register(SyntheticSource)
