"""Feature storage and data preparation.

- :mod:`~norton_core.data.store`: ``ShardStore.open(dir, read_mode)`` random access to a prepared shard set.
- :mod:`~norton_core.data.prepare_how2`: ``norton prepare how2`` (raw How2 layout -> one store per split).
- :mod:`~norton_core.data.mmpt`: ``norton prepare mmpt`` (adopt MMPT shards in place).
- :mod:`~norton_core.data.synthetic`: the generated How2-like dataset and its evaluation sets.
- :mod:`~norton_core.data.verify`: ``norton verify`` (every hash, NaN scan).
- :mod:`~norton_core.data.manifest`, :mod:`~norton_core.data.writer`, :mod:`~norton_core.data.npyfile`: the
  format and its crash-safe writing.

Nothing is imported here, so ``norton --help`` stays fast; import the submodules.
"""
