r"""Internet Explorer on Birdsnap (paper Table 1), from a local folder target.

  python launch.py --config=configs/birdsnap.py:data_dir=/data/birdsnap --workdir=runs/birdsnap

Target: 49,829 Flickr URLs, 500 species (rescrapes recover ~46.7k); not in TFDS. Lay it out as `data_dir/train/<class>/*.jpg` and
`data_dir/test/<class>/*.jpg` (or `data_dir/{train,test}.txt` lines "path label").
About 50 iterations in the paper. Paper linear-probe accuracy (base / random / Ours++ /
Ours++ with label set / CLIP): 39.9 / 39.6 / 54.4 / 62.8 / CLIP 57.1. Switches: see `configs/common.py:paper_config`.
"""
from configs import common


def get_config(arg=None):
  return common.paper_config(arg, target='folder', iterations=50,
                             category='bird')


def get_sweep():
  return common.table1_sweep()
