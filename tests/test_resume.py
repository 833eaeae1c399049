import pytest
import torch

from sparsity_bench.pipeline import Pipeline

from conftest import small_run, trained_outcome


class Killed(Exception):
    pass


@pytest.mark.parametrize("method, stop_after", [("l1", 2), ("magnitude", 4)])  # mid-train, mid-finetune
def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch, method, stop_after):
    cfg = small_run("lenet300", method, epochs=3, ft_epochs=2)
    cfg.finetune.keep_best = True
    reference = Pipeline(cfg, tmp_path / "whole", {}).run()

    saves = {"n": 0}
    real_save = Pipeline._save

    def dying_save(self, *args, **kwargs):
        real_save(self, *args, **kwargs)
        saves["n"] += 1
        if saves["n"] == stop_after:
            raise Killed  # the process dies right after a checkpoint

    monkeypatch.setattr(Pipeline, "_save", dying_save)
    with pytest.raises(Killed):
        Pipeline(cfg, tmp_path / "cut", {}).run()
    monkeypatch.setattr(Pipeline, "_save", real_save)
    resumed_pipe = Pipeline(cfg, tmp_path / "cut", {})
    resumed = resumed_pipe.run()

    for phase in ("train", "prune", "finetune"):
        assert resumed["phases"][phase]["test_acc"] == reference["phases"][phase]["test_acc"]
    assert trained_outcome(resumed["final"]) == trained_outcome(reference["final"])
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=False)["model"]
    for k, v in resumed_pipe.model.state_dict().items():
        assert torch.equal(v, whole[k]), k
