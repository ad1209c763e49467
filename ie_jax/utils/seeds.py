"""The run's random streams, each named, all derived from `config.seed`.

Every consumer of randomness in a run asks for its stream by name (and, where it has one,
an index such as the iteration or the epoch), so that no two of them share numbers by
accident and a resumed run draws what the uninterrupted one drew. The formulas are the
ones the project used before the streams had names (seed x a distinct prime + offset +
index), kept so that every recorded figure (the replays, the demo, BENCHMARKS.md)
reproduces with its command.
"""

# name -> (multiplier, offset): stream(seed, name, index) = seed * multiplier + offset + index
_STREAMS = {
    'target_pretrain': (1, 0),      # pretrain.py: the target's data order
    'finetune': (31, 0),            # the target fine-tune, per epoch
    'warmup': (7_753, 1),           # the web warm-up's data order
    'mixture': (7_919, 0),          # which replay and target images join an iteration
    'train': (104_729, 0),          # an iteration's training data order and crops
    'queries': (1_000_003, 0),      # an iteration's concept draw (and its descriptors)
}


def stream(seed: int, name: str, index: int = 0) -> int:
  """The seed of stream `name` (a key of `_STREAMS`), number `index`, of a run seeded
  `seed`."""
  if name not in _STREAMS:
    raise KeyError(f'No random stream {name!r}; the streams are {sorted(_STREAMS)}.')
  multiplier, offset = _STREAMS[name]
  return seed * multiplier + offset + index
