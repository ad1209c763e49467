"""The explore loop (paper Algorithm 1) and what it runs on.

`loop.py` is the algorithm, one method per phase; `setup.py` builds its parts from the
config; `state.py` is its resumable state; `search.py` its search-and-download phase;
`monitor.py` what it reports beside the algorithm; `caption_book.py` the caption GP's
images.
"""
from ie_jax.explore.loop import Explorer, run
