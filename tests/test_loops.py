"""One pass over a loader (protoef.training.loops): the head replayed on kept features equals
new forward passes, and a loader with worker processes is read once per pass."""
from __future__ import annotations

import multiprocessing

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from protoef.model import ProtoEFNet
from protoef.training.loops import encode_set, predict


class Counted(list):
    """Hand-made batches with the clip mode of a 2-clip TEST set; counts the passes over them."""
    dataset = type("Dataset", (), {"clips": 2})()
    passes = 0

    def __iter__(self):
        Counted.passes += 1
        return super().__iter__()


def test_predictions_replayed_on_kept_features_equal_new_forward_passes():
    # After training only the prototypes and θ change; the pooled features do not, so the run's
    # end makes one pass per split (`encode_set`) and replays the head on it. Checked against
    # new forward passes of the changed model, bit for bit, on two batches of multi-clip
    # videos (clip averaging included).
    torch.manual_seed(2)
    model = ProtoEFNet(backbone="r2plus1d_10", num_prototypes=3, prototype_dim=8, tau=0.2).eval()
    loader = Counted([{"video": torch.randn(3, 3, 8, 32, 32), "ef": torch.tensor([35.0, 55.0]), "filename": ["a", "b"],
                       "num_clips": torch.tensor([2, 1])},
                      {"video": torch.randn(2, 3, 8, 32, 32), "ef": torch.tensor([70.0]), "filename": ["c"],
                       "num_clips": torch.tensor([2])}])
    Counted.passes = 0
    encoded = encode_set(model, loader)
    assert Counted.passes == 1 and encoded.clips == "2"
    with torch.no_grad():  # a push (new vectors and labels) and a refit (new θ)
        model.set_prototypes(torch.randn(3, 8), torch.tensor([25.0, 45.0, 65.0]))
        model.theta.fill_(2.5)
    replayed, forward = predict(model, encoded), predict(model, loader)
    assert Counted.passes == 2  # the replay read no video
    assert replayed["filename"] == forward["filename"] == ["a", "b", "c"]
    for key in ("ef", "prediction", "weights", "similarities"):
        assert np.array_equal(replayed[key], forward[key]), key
    assert forward["similarities"].shape == (3, 3) and not np.allclose(forward["weights"], 1 / 3)


LOADED = multiprocessing.Value("i", 0)  # items loaded, summed over the worker processes


class CountingVideos(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        with LOADED.get_lock():
            LOADED.value += 1
        return {"video": torch.full((3, 8, 32, 32), float(index)), "ef": torch.tensor(30.0 + 10 * index),
                "filename": f"{index}.avi"}


def test_a_loader_with_workers_is_read_once_per_pass():
    # tqdm.auto's bar calls iter() on a DataLoader when it is built and again in its loop; with
    # workers the first iterator prefetched (here: every item) for nothing.
    model = ProtoEFNet(backbone="r2plus1d_10", num_prototypes=2, prototype_dim=8, tau=0.2).eval()
    loader = DataLoader(CountingVideos(), batch_size=1, num_workers=2)
    LOADED.value = 0
    assert predict(model, loader)["filename"] == ["0.avi", "1.avi", "2.avi", "3.avi"]
    assert LOADED.value == 4
