r"""Internet Explorer on Flowers-102 (paper Table 1).

  python launch.py --config=configs/flowers.py --workdir=runs/flowers
  python launch.py --config=configs/flowers.py:mode=random --workdir=runs/flowers-random
  python launch.py --config=configs/flowers.py:descriptors=/models/gpt-j-6b --workdir=runs/flowers-pp

Target: 2,040 train+val, 6,149 test (`tfds build oxford_flowers102 --file_format=array_record` first;
`data_dir=` points at the TFDS data). Hardware: one GPU desktop, as the paper (RTX 3090, 30-40
hours for ~45 iterations). Start from the official MoCo v3 ResNet-50 (`init=`) fine-tuned
on the target, as the paper did (`--config.init.finetune_epochs`).
Paper linear-probe accuracy (base / random / Ours++ / Ours++ with label set / CLIP): 94.6 (base) / 95.3 (random) / 98.4 (Ours++) / 99.1 (Ours++, label set) / CLIP 96.0.
Switches: see `configs/common.py:paper_config`.
"""
from configs import common


def get_config(arg=None):
  return common.paper_config(arg, target='oxford_flowers102', iterations=45,
                             category='flower')


def get_sweep():
  return common.table1_sweep()
