"""Run by ``torchrun`` in ``test_training``: the toy UDL run of ``toy_train`` on every rank."""

import sys

from toy import toy_config, toy_sources
from udl_align.training.loop import train

if __name__ == "__main__":
    train(toy_config(), sys.argv[1], progress=False, log=lambda *_: None,
          make_source=toy_sources())
