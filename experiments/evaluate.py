"""Thin entry point: ``python experiments/evaluate.py --workdir DIR`` is ``diffrl evaluate``."""

import sys

from diffrl.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
