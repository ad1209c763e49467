r"""Internet Explorer on PASCAL VOC2007 classification (paper Table 1; multi-label, mAP).

  python launch.py --config=configs/voc2007.py --workdir=runs/voc2007

Target: train+validation 5,011, test 4,952 (`tfds build voc/2007 --file_format=array_record`).
The paper starts VOC from MoCo v3 trained on VOC alone (ImageNet is too close to VOC), so
leave `init=` empty and fine-tune on the target (`--config.init.finetune_epochs`).
About 20 iterations in the paper. Paper (base / random / Ours++ / Ours++ label set / CLIP):
58.0 / 70.2 / 80.1 / 79.6 / 86.7. Switches: see `configs/common.py:paper_config`.
"""
from configs import common


def get_config(arg=None):
  return common.paper_config(arg, target='voc2007', iterations=20,
                             category='object')


def get_sweep():
  return common.table1_sweep()
