"""Benchmark items about the explanations' cost: notebook 07's deletion test over every
prototype, one prototype at a time (each call hides its own random draws) against
`deletion_table`'s one shared set of random occlusions per clip (docs/method.md §6)."""
from __future__ import annotations

import time

import numpy as np

from .common import DEMO, ratio, seed_everything


def deletion(quick: bool) -> dict:
    """Deletion test of every prototype on demo-shape clips (8 × 32², 8 × 8 maps, P = 40,
    random weights): `deletion_test` per (clip, prototype), the cost before, against
    `deletion_table` of all prototypes; the rows must agree."""
    import torch

    from protoef.analysis import faithfulness
    from protoef.model import ProtoEFNet

    clips, rounds = (2, 1) if quick else (4, 2)
    seed_everything()
    model = ProtoEFNet(num_prototypes=DEMO["prototypes"], backbone=DEMO["backbone"], output_stride=4).eval()
    videos = torch.randn(clips, 3, DEMO["frames"], DEMO["size"], DEMO["size"])
    prototypes = range(DEMO["prototypes"])
    times = {"one prototype at a time": [], "deletion_table": []}
    for _ in range(rounds):
        start = time.perf_counter()
        alone = [faithfulness.deletion_test(model, video, k) for video in videos for k in prototypes]
        times["one prototype at a time"].append(time.perf_counter() - start)
        start = time.perf_counter()
        table = faithfulness.deletion_table(model, videos, prototypes)
        times["deletion_table"].append(time.perf_counter() - start)
    largest = max(float(np.max(np.abs(table[key].to_numpy() - np.array([row[key] for row in alone]))))
                  for key in ("similarity", "drop_top", "drop_random"))
    best = {name: min(values) for name, values in times.items()}
    return {"title": "Deletion test: cost", "measurements": {"seconds": times, "clips": clips,
                                                              "largest_row_difference": largest},
            "ratios": [ratio(f"deletion test of {DEMO['prototypes']} prototypes, one at a time ÷ deletion_table",
                             best["one prototype at a time"] / best["deletion_table"], ">= 1.2",
                             note=f"{clips} demo-shape clips, min of {rounds}; largest difference of a row's "
                                  f"similarity or drops {largest:.1e}")]}
