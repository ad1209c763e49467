r"""Internet Explorer on Oxford-IIIT Pets (paper Table 1).

  python launch.py --config=configs/pets.py --workdir=runs/pets
  python launch.py --config=configs/pets.py:mode=random --workdir=runs/pets-random
  python launch.py --config=configs/pets.py:descriptors=/models/gpt-j-6b --workdir=runs/pets-pp

Target: 3,680 train, 3,669 test (`tfds build oxford_iiit_pet --file_format=array_record` first;
`data_dir=` points at the TFDS data). Hardware: one GPU desktop, as the paper (RTX 3090, 30-40
hours for ~35 iterations). Start from the official MoCo v3 ResNet-50 (`init=`) fine-tuned
on the target, as the paper did (`--config.init.finetune_epochs`).
Paper linear-probe accuracy (base / random / Ours++ / Ours++ with label set / CLIP): 85.3 / 85.6 / 89.6 / 90.8 / CLIP 88.4.
Switches: see `configs/common.py:paper_config`.
"""
from configs import common


def get_config(arg=None):
  return common.paper_config(arg, target='oxford_iiit_pet', iterations=35,
                             category='pet')


def get_sweep():
  return common.table1_sweep()
