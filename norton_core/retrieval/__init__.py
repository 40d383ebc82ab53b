"""Retrieval rounds (VideoCLIP's retrieval-augmented training).

:mod:`.round` embeds the training videos, asks the recipe's backend for neighbours and turns them into batches;
:mod:`.search` holds the exact and per-cell k-nearest-neighbour search the built-in backends share;
:mod:`.smallest_k` is its compiled k-smallest selection; :mod:`.batches` (with the compiled pass in
:mod:`.batch_draw`) turns neighbour lists into batches.
"""
