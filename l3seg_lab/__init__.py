"""The research harness beside ``experiments/``: what the studies on the project's own real data
need and the installed library does not (not packaged: ``pyproject.toml`` ships ``l3seg_lib`` only).

- ``realct.py``: the labelled real sets of the shared data folder, their loading, error pictures,
  every model scored on every set (the scores themselves are :mod:`l3seg_lib.evaluation.scoring`);
- ``patients.py``: the shared data folder's real patients and their reference files, for training on
  real CT (:mod:`l3seg_lib.training.realdata` builds the slices);
- ``l3_variants.py``: variants of a real series with vertebra labels (crops, thickness, position,
  couch, NIfTI storage, noise) and the L3 localiser scored on them.

It imports ``l3seg_lib``; ``l3seg_lib`` never imports it (``tests/test_layers.py``). It is found with
the repository root on the path: the experiment scripts put the root there themselves, and so does
``tests/conftest.py``.
"""
