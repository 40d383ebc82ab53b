"""The engine tests' shared fixture: the fake plugin set, with the fake shard store in place of the real one."""

from __future__ import annotations

import pytest

from tests.engine.fakes import fake_plugins


@pytest.fixture
def plugins(monkeypatch):
    import norton_core.engine.loader as dataio
    from tests.engine.fakes import open_fake_store

    monkeypatch.setattr(dataio, "open_store", open_fake_store)
    return fake_plugins()
