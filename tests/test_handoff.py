"""Hand-off to the user's own trainer (issue 13 item 4): the Lightning mixin takes the run's length from
the trainer (`estimated_stepping_batches`, stepped per batch), the PyTorch script from the user's loader,
and AdamW (decoupled weight decay) is an optimiser of the engine, the profiles and both exports."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from tuneassist.errors import UserError
from tuneassist.profiles import (
    Profile,
    dumps_toml,
    export_profile,
    loads_profile,
    profile_from_dict,
    profile_from_runspec,
    profile_to_runspec,
)
from tuneassist.spec import RunSpec

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def _profile(**over: object) -> Profile:
    d: dict[str, object] = {
        "name": "mine",
        "data": "folder:/data/imagenet-ish",  # a size tuneassist cannot know: the loader or trainer tells
        "model": "resnet20",
        "batch_size": 256,
        "devices": 2,
        "epochs": 4,
        "lr_min": 0.05,
        "lr_max": 0.5,
        "momentum_max": 0.95,
        "momentum_min": 0.85,
        "weight_decay": 5e-4,
    }
    d.update(over)
    return profile_from_dict(d)


def _namespace(code: str) -> dict:
    ns: dict = {"__name__": "onecycle_export"}
    exec(compile(code, "onecycle_export.py", "exec"), ns)
    return ns


def _beta1(group: dict) -> float:
    return group["momentum"] if "momentum" in group else group["betas"][0]


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_lightning_mixin_schedules_over_estimated_stepping_batches_per_step(optimizer: str) -> None:
    prof = _profile(optimizer=optimizer)
    ns = _namespace(export_profile(prof, "lightning"))
    assert ns["TRAINER_KWARGS"] == {"max_epochs": 4, "devices": 2} and ns["BATCH_SIZE_PER_DEVICE"] == 128

    class Net(ns["OneCycleMixin"], nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

    net = Net()
    for total in (37, 1563):  # whatever the DataModule, accumulation and devices make of the epochs
        net.trainer = SimpleNamespace(estimated_stepping_batches=total)
        conf = net.configure_optimizers()
        opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
        assert conf["lr_scheduler"]["interval"] == "step"
        assert type(opt) is OPTIMIZERS[optimizer] and sched.total_steps == total
        lrs, moms = [], []
        for _ in range(total):  # every step of the run, and not one "Tried to step" past it
            lrs.append(opt.param_groups[0]["lr"])
            moms.append(_beta1(opt.param_groups[0]))
            opt.step()
            sched.step()
        assert lrs[0] == pytest.approx(prof.lr_min) and max(lrs) == pytest.approx(prof.lr_max, rel=0.05)
        assert lrs[-1] < prof.lr_min / 10 and min(moms) == pytest.approx(prof.momentum_min, abs=0.01)
        assert opt.param_groups[0]["weight_decay"] == prof.weight_decay
    net.trainer = SimpleNamespace(estimated_stepping_batches=math.inf)
    with pytest.raises(ValueError, match="max_epochs or max_steps"):
        net.configure_optimizers()


def test_lightning_mixin_in_a_real_trainer() -> None:
    """With Lightning installed: a DataModule whose size no profile knew, gradient accumulation, and the
    scheduler ends exactly on the trainer's last step (the old YAML baked in 45,000 // TBS per epoch)."""
    lightning = pytest.importorskip("lightning")
    torch.set_num_threads(1)
    ns = _namespace(export_profile(_profile(devices=1, epochs=3, batch_size=32), "lightning"))

    class Net(ns["OneCycleMixin"], lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(12, 4)

        def training_step(self, batch: tuple, i: int) -> torch.Tensor:
            return nn.functional.cross_entropy(self.fc(batch[0]), batch[1])

    data = TensorDataset(torch.randn(1000, 12), torch.randint(0, 4, (1000,)))
    loader = DataLoader(data, batch_size=ns["BATCH_SIZE_PER_DEVICE"])  # 32 batches an epoch
    trainer = lightning.Trainer(
        **ns["TRAINER_KWARGS"], accelerator="cpu", accumulate_grad_batches=3, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Net(), loader)
    conf = trainer.lr_scheduler_configs[0]
    assert conf.interval == "step"
    assert conf.scheduler.total_steps == trainer.global_step == 33  # 3 epochs x ceil(32 / 3)
    assert conf.scheduler.last_epoch == trainer.global_step


def test_pytorch_script_takes_the_steps_per_epoch_of_the_users_loader() -> None:
    ns = _namespace(export_profile(_profile(optimizer="adamw", wd_exclude_bn_bias=True), "pytorch"))
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    loader = DataLoader(TensorDataset(torch.randn(500, 4)), batch_size=10)  # 50 batches
    opt, sched = ns["make_optimizer"](model, loader)
    assert sched.total_steps == 4 * 50 and type(opt) is torch.optim.AdamW
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]  # BN and biases excluded
    _, sched = ns["make_optimizer"](model, loader, epochs=2, accumulation_steps=5)
    assert sched.total_steps == 2 * 10
    _, sched = ns["make_optimizer"](model, 7)  # a number of steps per epoch works as before
    assert sched.total_steps == 28


def test_adamw_decays_the_weights_decoupled_from_the_gradient() -> None:
    """AdamW's WD shrinks each weight by lr x WD whatever the gradient (Loshchilov & Hutter); Adam's L2
    WD enters the gradient and is normalised away by the second moment."""
    from tuneassist.engine.optim import build_optimizer, set_hyper

    torch.manual_seed(0)
    spec = RunSpec(optimizer="adamw", weight_decay=0.1, lr_max=0.01).validate()
    model = nn.Linear(5, 3)
    opt = build_optimizer(model, spec)
    assert type(opt) is torch.optim.AdamW and opt.param_groups[0]["betas"] == (0.95, 0.999)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for p, b in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(p.detach(), b * (1 - 0.01 * 0.1))
    set_hyper(opt, 0.02, 0.9)  # the schedule drives it like Adam: LR and beta1
    assert opt.param_groups[0]["lr"] == 0.02 and opt.param_groups[0]["betas"] == (0.9, 0.999)

    adam = build_optimizer(
        nn.Linear(5, 3), RunSpec(optimizer="adam", weight_decay=0.1, lr_max=0.01).validate()
    )
    assert type(adam) is torch.optim.Adam and not adam.param_groups[0].get("decoupled_weight_decay", False)
    with pytest.raises(UserError, match="use one of sgd, adam, adamw"):
        RunSpec(optimizer="lamb").validate()


def test_profiles_name_the_optimizer_and_keep_it_through_toml_runs_and_exports() -> None:
    prof = _profile(optimizer="adamw")
    assert prof.optimizer == "adamw"
    text = dumps_toml(prof.to_dict())
    assert 'optimizer = "adamw"' in text and loads_profile(text).optimizer == "adamw"
    spec = profile_to_runspec(prof)
    assert spec.optimizer == "adamw"
    back = profile_from_runspec(spec, "again")
    assert back.optimizer == "adamw"
    assert "optimizer" not in _profile().to_dict()  # SGD, the paper's, stays the unwritten default
    assert profile_to_runspec(_profile()).optimizer == "sgd"
    for fmt in ("pytorch", "lightning"):
        assert "torch.optim.AdamW(" in export_profile(prof, fmt)
    import json

    assert json.loads(export_profile(prof, "json"))["optimizer"] == "adamw"
    with pytest.raises(UserError, match="optimizer 'lamb' is not supported; use one of sgd, adam, adamw"):
        _profile(optimizer="lamb")
    with pytest.raises(UserError, match="nesterov applies to SGD only"):
        _profile(optimizer="adam", nesterov=True)


def test_the_script_and_the_mixin_give_the_same_schedule_as_the_engine() -> None:
    from tuneassist.engine.schedules import build_schedule

    prof = _profile(optimizer="adam", epochs=3)
    total = 3 * 21
    spec = profile_to_runspec(prof)
    engine = build_schedule(spec, total)
    script = _namespace(export_profile(prof, "pytorch"))
    mixin = _namespace(export_profile(prof, "lightning"))
    for opt, sched in (
        script["make_optimizer"](nn.Linear(2, 2), 21),
        mixin["make_onecycle"](nn.Linear(2, 2), total),
    ):
        lrs, moms = [], []
        for _ in range(total):
            lrs.append(opt.param_groups[0]["lr"])
            moms.append(_beta1(opt.param_groups[0]))
            opt.step()
            sched.step()
        np.testing.assert_allclose(lrs, [engine.lr(i) for i in range(total)], rtol=1e-9)
        np.testing.assert_allclose(moms, [engine.momentum(i) for i in range(total)], rtol=1e-9)


@pytest.mark.parametrize(("flag", "expected"), [([], "adamw"), (["--optimizer", "sgd"], "sgd")])
def test_train_profile_uses_the_profiles_optimizer_unless_the_command_line_names_one(
    tmp_path, monkeypatch: pytest.MonkeyPatch, flag: list[str], expected: str
) -> None:
    from tuneassist.cli.main import main
    from tuneassist.engine import optim, train

    used: list[str] = []
    real = optim.build_optimizer

    def spy(model: nn.Module, spec: RunSpec) -> torch.optim.Optimizer:
        used.append(spec.optimizer)
        return real(model, spec)

    monkeypatch.setattr(train, "build_optimizer", spy)
    path = tmp_path / "mine.toml"
    path.write_text(
        dumps_toml(_profile(optimizer="adamw", data="synthetic", devices=1, batch_size=32).to_dict())
    )
    args = ["train", "--profile", str(path), "--data", "synthetic:300", "--steps", "2", "--threads", "1"]
    assert main([*args, "--no-augment", "--json", *flag]) == 0
    assert used == [expected]
