"""Stands in for the `tegrastats` binary in tests: prints recorded lines of a fixture file, in a loop,
one every `--interval` ms, the way the tool prints its own lines."""

import argparse
import itertools
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("fixture")
parser.add_argument("--interval", type=int, default=1000)
args = parser.parse_args()
with open(args.fixture) as f:
    lines = [line.rstrip("\n") for line in f if line.strip()]
for line in itertools.cycle(lines):
    time.sleep(args.interval / 1000)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
