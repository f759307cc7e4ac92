"""A minimal agent process for the crash tests: spool + link, emitting run-progress records.

It emits until the spool's stream reaches `--total` records (so a restarted process continues where
the killed one stopped), prints each seq as it is spooled, then flushes and closes cleanly.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ctxscope.agent.config import AgentConfig
from ctxscope.agent.transport.link import Link
from ctxscope.agent.transport.spool import Spool
from ctxscope.shared.messages import RunProgress


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--spool", type=Path, required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--rate-hz", type=float, required=True)
    parser.add_argument("--flush-timeout-s", type=float, default=20.0)
    args = parser.parse_args()
    config = AgentConfig(
        device=args.device,
        broker_host=args.host,
        broker_port=args.port,
        spool_path=args.spool,
        keepalive_s=5,
        insecure=args.host != "127.0.0.1",  # a test broker on a private veth link, no TLS
    )
    spool = Spool(config.resolved_spool_path(), config.device)
    link = Link(config, spool)
    link.start()
    while (seq := spool.high_water_seq()) < args.total:
        spool.emit(RunProgress, run_id="crash-test", done=seq + 1, total=args.total)
        print(seq + 1, flush=True)
        time.sleep(1 / args.rate_hz)
    # like a daemon that stays up: a link still down at the end gets time to come back first
    link.wait_connected(args.flush_timeout_s)
    flushed = link.close(flush_timeout_s=args.flush_timeout_s)
    print("flushed" if flushed else "not flushed", flush=True)
    return 0 if flushed else 1


if __name__ == "__main__":
    sys.exit(main())
