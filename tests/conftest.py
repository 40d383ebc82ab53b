from __future__ import annotations

import os

# Only the plugins of this distribution are loaded in tests, so a stray third-party plugin installed in the same
# environment cannot change results (tests that need another plugin pass their own environment to a subprocess).
os.environ.setdefault("NORTON_LOAD_PLUGINS", "norton")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
