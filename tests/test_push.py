"""The push's choice of clips, on a stand-in model whose similarities are set by hand."""
import pytest
import torch

from protoef.model import ProtoEFOutput
from protoef.training.push import push_prototypes


class HandModel(torch.nn.Module):
    """Clip i of the data set has similarity table[i] to the prototypes; its pooled feature
    for prototype j is (i, j), so the test can read which clip a prototype was pushed onto."""

    def __init__(self, table, labels):
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float32)  # (clips, P)
        self.register_buffer("prototype_labels", torch.tensor(labels, dtype=torch.float32))
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, video, return_features=False):
        index = video[:, 0, 0, 0, 0].long()  # each "video" carries its clip index
        sims = self.table[index]
        n, p = sims.shape
        features = torch.stack([index.float()[:, None].expand(n, p), torch.arange(p).float().expand(n, p)], -1)
        maps = torch.zeros(n, p, 1, 1, 1)
        return ProtoEFOutput(sims.mean(1), sims, maps, torch.softmax(sims, 1), features if return_features else None)


def loader(efs, batch_size=2):
    batches = []
    for start in range(0, len(efs), batch_size):
        index = torch.arange(start, min(start + batch_size, len(efs)))
        batches.append({"video": index.float()[:, None, None, None, None].expand(-1, 1, 1, 1, 1).clone(),
                        "ef": torch.tensor([efs[i] for i in index]), "filename": [f"clip{i}" for i in index.tolist()],
                        "clip_starts": torch.zeros(len(index), 1, dtype=torch.long)})
    return batches


def test_unique_push_gives_the_second_prototype_its_next_best_clip():
    # Prototypes labelled 50 and 51 (Δl = 5) both like clip 0 best; clip 1 is second for both.
    table = [[0.9, 0.8], [0.7, 0.6], [0.1, 0.2]]
    efs = [50.0, 52.0, 49.0]
    independent = push_prototypes(HandModel(table, [50.0, 51.0]), loader(efs), delta=5.0, unique=False)
    assert list(independent.table["source_filename"]) == ["clip0", "clip0"]  # the official rule
    unique = push_prototypes(HandModel(table, [50.0, 51.0]), loader(efs), delta=5.0, unique=True)
    # Prototype 0 has the more similar candidate (0.9), so it chooses first and keeps clip 0.
    assert list(unique.table["source_filename"]) == ["clip0", "clip1"]
    assert unique.labels.tolist() == [50.0, 52.0]
    assert unique.prototypes[1].tolist() == [1.0, 1.0]  # clip 1's pooled feature for prototype 1
    assert not unique.table["shared"].any()


def test_unique_push_shares_a_clip_only_when_the_window_offers_no_other():
    # Only clip 0 lies within Δl of both labels; clip 1 (EF 80) is outside both windows.
    table = [[0.9, 0.8], [0.95, 0.99]]
    result = push_prototypes(HandModel(table, [50.0, 52.0]), loader([51.0, 80.0]), delta=5.0, unique=True)
    assert list(result.table["source_filename"]) == ["clip0", "clip0"]
    assert list(result.table["shared"]) == [False, True]
    assert not result.table["fallback"].any()


def test_push_falls_back_to_the_nearest_label_with_a_warning(caplog):
    table = [[0.2], [0.9]]
    with caplog.at_level("WARNING"):
        result = push_prototypes(HandModel(table, [10.0]), loader([30.0, 40.0]), delta=5.0)
    assert result.table["fallback"].tolist() == [True]
    assert result.table["source_filename"].tolist() == ["clip0"]  # EF 30 is nearer to 10 than EF 40
    assert "no training clip within" in caplog.text


@pytest.mark.parametrize("unique", [True, False])
def test_push_sees_candidates_across_batches(unique):
    # The best clip for prototype 0 is in the second batch.
    table = [[0.1], [0.2], [0.3], [0.95]]
    result = push_prototypes(HandModel(table, [50.0]), loader([50.0, 51.0, 52.0, 53.0], batch_size=2),
                             delta=5.0, unique=unique)
    assert result.table["source_filename"].tolist() == ["clip3"]
    assert result.table["similarity"].tolist() == pytest.approx([0.95])
