"""`train soup`: uniform and greedy weight averages that load like any checkpoint."""

import open_clip
import pytest
import torch

from train import checkpoint, cli
from train.soup import SoupError, average, greedy, load_weights


def _checkpoint(path, seed):
    from train.scales import register_model_configs

    register_model_configs()
    torch.manual_seed(seed)
    model = open_clip.create_model("datacomp-tiny")
    checkpoint.save({"state_dict": model.state_dict(), "model": "datacomp-tiny"}, path)
    return model.state_dict()


def test_uniform_soup_cli_loads_in_open_clip(tmp_path):
    sds = [_checkpoint(tmp_path / f"{i}.pt", i) for i in range(3)]
    out = tmp_path / "soup.pt"
    assert cli.main(["soup", *(str(tmp_path / f"{i}.pt") for i in range(3)), "--output", str(out)]) == 0
    model, _, _ = open_clip.create_model_and_transforms("datacomp-tiny", pretrained=str(out))
    for name, value in model.state_dict().items():
        expected = (sds[0][name] + sds[1][name] + sds[2][name]) / 3
        torch.testing.assert_close(value, expected, msg=name)
    assert checkpoint.load(out)["kind"] == "uniform"


def test_soup_refuses_different_architectures():
    a = {"w": torch.zeros(2, 2)}
    with pytest.raises(SoupError, match="shape"):
        average([a, {"w": torch.zeros(3, 2)}])
    with pytest.raises(SoupError, match="different weights"):
        average([a, {"v": torch.zeros(2, 2)}])


def test_greedy_soup_keeps_only_what_helps(tmp_path):
    target = {"w": torch.tensor([1.0, 1.0])}
    points = {"a": [1.2, 0.8], "b": [0.8, 1.2], "c": [5.0, -3.0]}  # a+b average to the target; c hurts
    paths = []
    for name, w in points.items():
        checkpoint.save({"state_dict": {"w": torch.tensor(w)}}, tmp_path / f"{name}.pt")
        paths.append(tmp_path / f"{name}.pt")

    def score(sd):
        return -float((sd["w"] - target["w"]).norm())

    weights, chosen = greedy(paths, score, log=lambda *_: None)
    assert sorted(p.rsplit("/", 1)[1] for p in chosen) == ["a.pt", "b.pt"]
    torch.testing.assert_close(weights["w"], target["w"])
    assert load_weights(paths[2])["w"].tolist() == [5.0, -3.0]
