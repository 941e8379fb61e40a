"""Thin entry point: ``python experiments/train.py --config=FILE:VARIANT --workdir DIR`` is ``diffrl train``."""

import sys

from diffrl.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
