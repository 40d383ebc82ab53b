"""The engine tests' shared fixture: the fake plugin set, with the fake shard store in place of the real one."""

from __future__ import annotations

import pytest
from engine_fakes import fake_plugins


@pytest.fixture
def plugins(monkeypatch):
    from engine_fakes import open_fake_store

    import norton_core.engine.data as dataio

    monkeypatch.setattr(dataio, "open_store", open_fake_store)
    return fake_plugins()
