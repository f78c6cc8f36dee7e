"""What the supplier's cache saves: AWS credential lookups during a long run.

Runs against the loopback fakes (moto + the ECS credentials endpoint); no cloud. Prints:
- a supplier call with a warm cache vs a fetch from the ECS endpoint (the baseline);
- ECS endpoint calls over a simulated 12 h run with hourly Google refreshes, vs one per refresh.

    .venv/bin/python bench/bench_supplier.py [--rounds 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from blocks.ecs import AwsEcsTaskRoleSupplier
from standins.aws import EcsMetadataServer, ManualClock, MotoAws


def _median_ms(fn, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=50)
    rounds = parser.parse_args().rounds
    moto = MotoAws()
    clock = ManualClock()
    with EcsMetadataServer(moto, clock=clock) as ecs:
        environ = {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": ecs.relative_uri}

        def supplier(margin: timedelta) -> AwsEcsTaskRoleSupplier:
            return AwsEcsTaskRoleSupplier(
                environ=environ, ecs_host=ecs.url, clock=clock, refresh_margin=margin
            )

        # A margin longer than the credentials' lifetime turns the cache off: the baseline.
        cached, uncached = supplier(timedelta(minutes=5)), supplier(timedelta(days=1))
        hit = _median_ms(lambda: cached.get_aws_security_credentials(None, None), rounds)
        miss = _median_ms(lambda: uncached.get_aws_security_credentials(None, None), rounds)
        print(f"supplier, warm cache   {hit:9.4f} ms per call")
        print(f"supplier, ECS fetch    {miss:9.4f} ms per call (baseline; {miss / hit:,.0f}x)")

        before = len(ecs.requests_to("/v2/credentials"))
        run = supplier(timedelta(minutes=5))
        for _hour in range(12):
            run.get_aws_security_credentials(None, None)
            clock.advance(timedelta(hours=1))
        calls = len(ecs.requests_to("/v2/credentials")) - before
        print(f"12 h run, hourly refresh: {calls} ECS calls (baseline 12; {12 / calls:.0f}x fewer)")
    moto.close()


if __name__ == "__main__":
    main()
