r"""Internet Explorer on Food-101 (paper Table 1).

  python launch.py --config=configs/food.py --workdir=runs/food
  python launch.py --config=configs/food.py:mode=random --workdir=runs/food-random
  python launch.py --config=configs/food.py:descriptors=/models/gpt-j-6b --workdir=runs/food-pp

Target: 75,750 train, 25,250 test (TFDS validation) (`tfds build food101 --file_format=array_record` first;
`data_dir=` points at the TFDS data). Hardware: one GPU desktop, as the paper (RTX 3090, 30-40
hours for ~45 iterations). Start from the official MoCo v3 ResNet-50 (`init=`) fine-tuned
on the target, as the paper did (`--config.init.finetune_epochs`).
Paper linear-probe accuracy (base / random / Ours++ / Ours++ with label set / CLIP): 78.3 / 77.0 / 82.2 / 84.6 / CLIP 86.4.
Switches: see `configs/common.py:paper_config`.
"""
from configs import common


def get_config(arg=None):
  return common.paper_config(arg, target='food101', iterations=45,
                             category='food')


def get_sweep():
  return common.table1_sweep()
