"""The tutorial's training entry point (step 5.1.4), run from this folder:

    python main.py --basepath B --trainpath T --testpath V --savedir S --data-format fim \
        --deepspeed_config ds_config.json --local_rank -1
    deepspeed --num_gpus=2 main.py ...      torchrun --nproc_per_node=2 main.py ...

Same flags as `eagle train`; see docs/training.md. The log goes to <savedir>/training.log, and
./training.log links to it, so the tutorial's `tail -f training.log` works from here.
"""

import sys
from pathlib import Path

try:
    import eagle.train.cli  # noqa: F401
except ImportError:  # not installed: use the checkout this file lives in
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from eagle.train.cli import main

if __name__ == "__main__":
    sys.exit(main(log_link=True))
