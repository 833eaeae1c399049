import pytest
import torch

from sparsity_bench.errors import RunDirError
from sparsity_bench.pipeline import Pipeline

from conftest import run_interrupted, run_killed, small_run, trained_outcome


# mid-train, mid-finetune; l0 mid-finetune: the model is rebuilt without the gates detach removed
@pytest.mark.parametrize("method, stop_after", [("l1", 2), ("magnitude", 4), ("l0", 4)])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch, method, stop_after):
    cfg = small_run("lenet300", method, epochs=3, ft_epochs=2)
    cfg.finetune.keep_best = True
    reference = Pipeline(cfg, tmp_path / "whole", {}).run()

    resumed_pipe, resumed = run_interrupted(cfg, tmp_path / "cut", monkeypatch, stop_after)

    for phase in ("train", "prune", "finetune"):
        assert resumed["phases"][phase]["test_acc"] == reference["phases"][phase]["test_acc"]
    assert trained_outcome(resumed["final"]) == trained_outcome(reference["final"])
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=False)["model"]
    for k, v in resumed_pipe.model.state_dict().items():
        assert torch.equal(v, whole[k]), k


def test_a_checkpoint_write_that_fails_midway_leaves_the_previous_one_to_resume_from(tmp_path, monkeypatch):
    """torch.save dies halfway through the second finetune checkpoint (say, a full disk)."""
    cfg = small_run("lenet300", "l1", epochs=1, ft_epochs=2, lam=1e-4)
    cfg.curve.fractions, cfg.measure.slim = [], False  # not what this is about
    cfg.dataset.train_size, cfg.dataset.test_size, cfg.threads = 300, 100, 1
    reference = Pipeline(cfg, tmp_path / "whole", {}).run()

    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and (obj.get("phase"), obj.get("epoch")) == ("finetune", 2):
            with open(f, "wb") as out:
                out.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(28, "No space left on device")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        Pipeline(cfg, tmp_path / "cut", {}).run()
    monkeypatch.setattr(torch, "save", real_save)

    ckpt = tmp_path / "cut" / "checkpoints" / "last.pt"
    assert (tmp_path / "cut" / "checkpoints" / "last.pt.tmp").is_file()  # the torn write stays aside
    state = torch.load(ckpt, weights_only=False)
    assert (state["phase"], state["epoch"]) == ("finetune", 1)
    resumed = Pipeline(cfg, tmp_path / "cut", {}).run()
    assert trained_outcome(resumed["final"]) == trained_outcome(reference["final"])
    assert torch.load(ckpt, weights_only=False)["finished"]


def test_a_checkpoint_whose_optimizer_state_fits_other_parameters_is_refused_in_one_sentence(tmp_path, monkeypatch):
    """An older version saved Adam's state in another parameter order: loaded by position it would
    pair moments with the wrong tensors (a shape error deep in Adam, or silently wrong steps)."""
    cfg = small_run("lenet300", "l1", epochs=2, ft_epochs=1, lam=1e-4)
    cfg.curve.fractions, cfg.measure.slim = [], False
    run_killed(cfg, tmp_path, monkeypatch, stop_after=1)
    ckpt = tmp_path / "checkpoints" / "last.pt"
    state = torch.load(ckpt, weights_only=False)
    del state["param_names"]  # as an older version wrote it
    torch.save(state, ckpt)
    with pytest.raises(RunDirError, match="written by an older one.*new hydra.run.dir") as err:
        Pipeline(cfg, tmp_path, {}).run()
    assert "\n" not in str(err.value)
