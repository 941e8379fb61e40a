"""Thin entry point: ``python experiments/demo.py [--workdir DIR]`` is ``diffrl demo``."""

import sys

from diffrl.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
