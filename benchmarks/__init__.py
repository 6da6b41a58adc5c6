"""Benchmark suite of protoef: speed, memory and scaling as ratios with targets.

    python -m benchmarks                 # everything (CPU: a few minutes)
    python -m benchmarks --quick         # fewer repetitions and sizes
    python -m benchmarks --only head     # one item; see python -m benchmarks --list

Results: benchmarks/results/<name>.json and benchmarks/results/README.md (the table).
Speed targets live here, never in timed tests.
"""
