r"""Internet Explorer on fMoW (satellite) (paper Table 1), from a local folder target.

  python launch.py --config=configs/fmow.py:data_dir=/data/fmow --workdir=runs/fmow

Target: fMoW-rgb, ~200 GB of JPEGs on AWS; not in TFDS. Lay it out as `data_dir/train/<class>/*.jpg` and
`data_dir/test/<class>/*.jpg` (or `data_dir/{train,test}.txt` lines "path label").
About 40 iterations in the paper. Paper linear-probe accuracy (base / random / Ours++ /
Ours++ with label set / CLIP): 48.8 / - / - / 50.6 / CLIP 37.5. Switches: see `configs/common.py:paper_config`.
"""
from configs import common


def get_config(arg=None):
  return common.paper_config(arg, target='folder', iterations=40,
                             category='satellite image')


def get_sweep():
  return common.table1_sweep()
