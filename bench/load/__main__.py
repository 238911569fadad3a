"""``python -m bench.load generator`` (a generator process, as the harness starts it), or
``python -m bench.load [options]`` (the same as ``remotecase bench load``)."""

from __future__ import annotations

import argparse
import sys

from .cli import add_arguments, main
from .generator import main as generator_main

if sys.argv[1:2] == ["generator"]:
    generator_main()
else:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
