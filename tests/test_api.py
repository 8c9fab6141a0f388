"""The Python API, used as a user with a training script of their own would use it.

A small CNN of the test's own on 48x48 random-but-learnable images in a torch DataLoader: the range
test reads it, and the model, optimiser and RNGs are bit-identical afterwards (training continues as
if the test had never run). `track()` from a plain loop lands in the run store and `tuneassist runs`.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tuneassist
from tuneassist.advisor.lr_range import fmt_num

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """2 shared cores: oversubscribed threads make a 2 s test take 30 s."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def quadrant_images(n: int, seed: int) -> TensorDataset:
    """4 classes of noisy 48x48 images, each brighter in one quadrant: easy to learn, never downloaded."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.5 * torch.randn(n, 3, 48, 48, generator=g)
    for c in range(4):
        r, q = divmod(c, 2)
        x[y == c, :, r * 24 : (r + 1) * 24, q * 24 : (q + 1) * 24] += 1.0
    return TensorDataset(x, y)


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(4),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )


def _equal(a: object, b: object) -> bool:
    """Bit-identical nested state (tensors by torch.equal, dtype and device too)."""
    if isinstance(a, torch.Tensor):
        return (
            isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.device == b.device
            and a.shape == b.shape
            and torch.equal(a, b)
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return (
            type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def _user_setup() -> tuple[nn.Module, torch.optim.Optimizer, DataLoader, DataLoader]:
    torch.manual_seed(0)
    model = small_cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    train = DataLoader(quadrant_images(512, 0), batch_size=32, shuffle=True)
    val = DataLoader(quadrant_images(256, 1), batch_size=64)
    # A few real steps first: momentum buffers, BN statistics and gradients are there to be kept.
    for i, (x, y) in enumerate(train):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if i == 2:
            break
    return model, optimizer, train, val


def test_range_test_reads_a_users_cnn_and_leaves_everything_as_found() -> None:
    model, optimizer, train, val = _user_setup()
    model.eval()  # found in eval mode (after the user's validation): it must come back in eval mode
    before_model = copy.deepcopy(model.state_dict())
    before_opt = copy.deepcopy(optimizer.state_dict())
    before_grads = [p.grad.clone() for p in model.parameters()]
    before_rng = torch.get_rng_state()
    twin = copy.deepcopy(model)  # the same net and optimiser that never see the range test
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    twin_opt.load_state_dict(copy.deepcopy(optimizer.state_dict()))

    result = tuneassist.range_test(model, optimizer, train, val_loader=val, start_lr=1e-5, end_lr=10)

    s = result.suggestion
    assert isinstance(s, tuneassist.LRSuggestion)
    assert s.max_lr is not None and s.min_lr is not None and s.min_lr < s.max_lr, s.explanation
    assert s.explanation.startswith(f"Use 1cycle LR {fmt_num(s.min_lr)}"), s.explanation
    assert 0.01 <= s.max_lr <= 10, s.explanation  # a BN net on easy data: a large LR trains
    assert result.curve["val_lr"] and len(result.curve["val_loss"]) == len(result.curve["val_lr"])
    assert len(result.curve["lr"]) == len(result.curve["train_loss"]) == result.steps
    assert result.curve["lr"][0] == pytest.approx(1e-5)
    assert result.curve["momentum"][0] == pytest.approx(0.95)
    assert result.seconds < 60

    # Bit-identical: weights and BN buffers, optimiser state and groups, gradients, mode, RNG.
    assert _equal(model.state_dict(), before_model)
    assert _equal(optimizer.state_dict(), before_opt)
    assert optimizer.param_groups[0]["lr"] == 0.05 and optimizer.param_groups[0]["momentum"] == 0.9
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before_grads, strict=True))
    assert not model.training and not any(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), before_rng)

    # ... so training goes on exactly as the twin's: the same shuffled batches, the same weights.
    model.train()
    twin.train()
    for net, opt in ((model, optimizer), (twin, twin_opt)):
        torch.manual_seed(5)
        for i, (x, y) in enumerate(train):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
            if i == 1:
                break
    assert _equal(model.state_dict(), twin.state_dict())

    text = result.plot(color=False, width=80, height=16)
    assert "LR range test: loss vs learning rate" in text and s.explanation in text
    back = json.loads(json.dumps(result.to_dict()))
    assert back["suggestion"]["max_lr"] == s.max_lr and back["curve"]["lr"] == result.curve["lr"]


def test_range_test_with_a_step_fn_adam_and_accumulation() -> None:
    """Any task through step_fn (here a regression with dict batches), Adam, 2 micro-batches per step."""
    torch.manual_seed(1)
    x = torch.randn(256, 3, 48, 48)
    target = x.mean(dim=(1, 2, 3), keepdim=False).unsqueeze(1) * 3
    batches = [{"image": x[i : i + 16], "target": target[i : i + 16]} for i in range(0, 256, 16)]
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    before = copy.deepcopy(model.state_dict())
    calls = []

    def step_fn(net: nn.Module, batch: dict) -> torch.Tensor:
        calls.append(1)
        return nn.functional.mse_loss(net(batch["image"]), batch["target"])

    result = tuneassist.range_test(
        model, optimizer, batches, step_fn=step_fn, start_lr=1e-5, end_lr=1.0, steps=60, accumulation_steps=2
    )
    assert len(calls) >= 2 * result.steps  # two micro-batches per optimiser step
    assert result.suggestion.explanation
    assert _equal(model.state_dict(), before)
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.99) and optimizer.param_groups[0]["lr"] == 1e-3
    assert optimizer.state_dict()["state"] == {}


def test_range_test_restores_the_model_when_the_loss_fails_and_names_the_fix() -> None:
    model, optimizer, train, _ = _user_setup()
    before = copy.deepcopy(model.state_dict())
    n = {"k": 0}

    def flaky(net: nn.Module, batch: tuple) -> torch.Tensor:
        n["k"] += 1
        if n["k"] > 5:
            raise RuntimeError("the user's loss broke")
        return nn.functional.cross_entropy(net(batch[0]), batch[1])

    with pytest.raises(RuntimeError, match="user's loss broke"):
        tuneassist.range_test(model, optimizer, train, step_fn=flaky, steps=20)
    assert _equal(model.state_dict(), before)  # restored even though the test stopped half-way

    dicts = [{"x": torch.randn(4, 3, 48, 48), "y": torch.zeros(4, dtype=torch.long)}]
    with pytest.raises(TypeError, match="step_fn"):
        tuneassist.range_test(model, optimizer, dicts, steps=10)
    with pytest.raises(ValueError, match="start_lr 1 must be below end_lr 0.1"):
        tuneassist.range_test(model, optimizer, train, start_lr=1, end_lr=0.1)
    with pytest.raises(ValueError, match="momentum"):
        tuneassist.range_test(model, optimizer, train, momentum=(0.8, 0.9))
    assert _equal(model.state_dict(), before)


def test_import_tuneassist_does_not_import_torch() -> None:
    code = (
        "import sys, tuneassist\n"
        "tuneassist.suggest_lr, tuneassist.diagnose, tuneassist.track, tuneassist.read_curve\n"
        "assert tuneassist.api.read_range_test is not None\n"
        "import tuneassist.cli.main\n"
        "assert 'range_test' in dir(tuneassist)\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tuneassist.nope  # noqa: B018


def test_suggest_lr_and_diagnose_are_the_advisors() -> None:
    from tuneassist.advisor import diagnosis, lr_range

    assert tuneassist.suggest_lr is lr_range.suggest_lr
    lrs = [1e-4 * 10 ** (5 * i / 199) for i in range(200)]
    losses = [
        2.3 - 1.5 / (1 + math.exp(-3 * (math.log10(lr) + 2))) + (20 * (lr - 0.5) if lr > 0.5 else 0)
        for lr in lrs
    ]
    s = tuneassist.suggest_lr(lrs, losses)
    assert s.max_lr is not None and 0.01 < s.max_lr < 0.5

    # An overfitting run of the user's own: val loss turns up while the train loss keeps falling.
    steps = list(range(0, 400))
    train_loss = [2.0 * math.exp(-s / 100) + 0.05 for s in steps]
    val_steps = list(range(20, 400, 20))
    val_loss = [1.0 + ((v - 150) / 150) ** 2 * 0.5 for v in val_steps]
    d = tuneassist.diagnose(
        steps, train_loss, val_steps, val_loss, lr_max=0.1, weight_decay=1e-4, batch_size=128
    )
    assert isinstance(d, diagnosis.Diagnosis)
    assert d.kind == "overfitting", d.explanation
    # x3 on WD; the remedy names the value only when the current WD came through the keyword.
    assert d.change == {"weight_decay": 3.0} and "raise WD to 3e-4 (from 1e-4)" in d.remedy, d.remedy
    with pytest.raises(ValueError, match="one val loss per entry"):
        tuneassist.diagnose(steps, train_loss, val_steps, val_loss[:-1])


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "tuneassist.cli.main", *args], capture_output=True, text=True, timeout=120
    )
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_track_from_a_plain_loop_shows_in_runs_with_every_row(tmp_path: Path) -> None:
    from tuneassist.runs.store import Store

    ws = tmp_path / "ws"
    hp = {"lr_max": 0.1, "lr_min": 0.01, "momentum_max": 0.9, "weight_decay": 5e-4, "batch_size": 64}
    with tuneassist.track(
        "my-net",
        hparams=hp,
        model="my-resnet",
        data="my-images",
        total_steps=40,
        steps_per_epoch=10,
        workspace=ws,
    ) as run:
        for step in range(40):
            row: dict[str, float] = {
                "lr": 0.01 + 0.002 * step,
                "momentum": 0.9,
                "train_loss": 2.0 / (1 + step),
            }
            if step % 5 == 4:
                row.update(val_loss=2.2 / (1 + step) + 0.1, val_acc=0.3 + 0.01 * step)
            run.log(step, **row)
        # live: the store already lists it as running, no worker and no device slot
        live = Store(ws).get_run(run.run_id)
        assert live.status == "running" and live.kind == "track" and live.device is None
    listed = json.loads(_cli("runs", "--json", "--workspace", str(ws)).stdout)
    (r,) = [x for x in listed if x["id"] == run.run_id]
    assert r["status"] == "finished" and r["kind"] == "track"
    assert r["model"] == "my-resnet" and r["data"] == "my-images"
    assert r["hyperparameters"]["lr_max"] == 0.1 and r["hyperparameters"]["weight_decay"] == 5e-4
    assert r["best_val_acc"] == pytest.approx(0.3 + 0.01 * 39)
    assert r["step"] == 40 and r["total_steps"] == 40
    rows = Store(ws).metrics(run.run_id)
    assert [x["step"] for x in rows] == list(range(40))
    assert rows[7]["train_loss"] == pytest.approx(2.0 / 8) and rows[7]["epoch"] == pytest.approx(0.7)
    assert rows[9]["val_loss"] == pytest.approx(2.2 / 10 + 0.1) and rows[8]["val_loss"] is None
    assert rows[5]["images_per_s"] > 0  # from batch_size and the time between logs

    table = _cli("runs", "--workspace", str(ws)).stdout
    assert "track" in table and "my-resnet" in table and "finished" in table
    watch = _cli("runs", "watch", str(run.run_id), "--no-plot", "--workspace", str(ws)).stdout
    assert f"run {run.run_id} finished" in watch
    resume = _cli("runs", "resume", str(run.run_id), "--workspace", str(ws), check=False)
    assert resume.returncode == 2 and "run your script again" in resume.stderr
    assert len(resume.stderr.strip().splitlines()) == 1


def test_track_ends_failed_diverged_or_cancelled(tmp_path: Path) -> None:
    from tuneassist.runs.store import Store

    ws = tmp_path / "ws"
    with pytest.raises(ZeroDivisionError):
        with tuneassist.track(workspace=ws) as failing:
            failing.log(0, train_loss=1.0)
            raise ZeroDivisionError("oops")
    with tuneassist.track(workspace=ws) as blown:
        blown.log(0, train_loss=1.0)
        blown.log(1, train_loss=float("nan"))
    with tuneassist.track(workspace=ws) as stopped:
        stopped.log(0, train_loss=1.0)
        Store(ws).request_cancel(stopped.run_id)  # what `tuneassist runs cancel ID` does
        for _ in range(100):  # the heartbeat hears the request within its interval (2 s)
            if stopped.should_stop:
                break
            time.sleep(0.1)
        assert stopped.should_stop
    store = Store(ws)
    f, b, c = (store.get_run(r.run_id) for r in (failing, blown, stopped))
    assert f.status == "failed" and "ZeroDivisionError: oops" in f.error
    assert b.status == "diverged" and "step 1" in b.outcome["reason"]
    assert store.metrics(blown.run_id)[1]["train_loss"] is None  # NaN stored as NULL, like a worker's
    assert c.status == "cancelled"
    with pytest.raises(TypeError, match="step"):
        with tuneassist.track(workspace=ws) as bad:
            bad.log(-1, train_loss=1.0)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _range_curve() -> tuple[list[float], list[float]]:
    lrs = [1e-5 * 10 ** (6 * i / 99) for i in range(100)]
    loss = [
        2.3 - 1.5 / (1 + math.exp(-3 * (math.log10(lr) + 2))) + (5 * (lr - 0.3) if lr > 0.3 else 0)
        for lr in lrs
    ]
    return lrs, loss


def test_lr_read_reads_other_tools_curves(tmp_path: Path) -> None:
    lrs, loss = _range_curve()
    files = {
        # torch-lr-finder: json.dump(lr_finder.history, f)
        "history.json": json.dumps({"lr": lrs, "loss": loss}),
        # Lightning: json.dump(lr_finder.results, f)
        "lightning.json": json.dumps({"results": {"lr": lrs, "loss": loss}}),
        "curve.csv": "lr,loss,val_loss\n"
        + "\n".join(
            f"{a},{b},{b + 0.1 if i % 4 == 0 else ''}" for i, (a, b) in enumerate(zip(lrs, loss, strict=True))
        ),
        "export.jsonl": "\n".join(
            json.dumps({"step": i, "lr": a, "train_loss": b})
            for i, (a, b) in enumerate(zip(lrs, loss, strict=True))
        ),
    }
    maxes = set()
    for name, text in files.items():
        out = json.loads(_cli("lr-read", str(_write(tmp_path / name, text)), "--json").stdout)
        assert out["suggestion"]["max_lr"] is not None, (name, out["suggestion"]["explanation"])
        assert len(out["curve"]["lr"]) == 100
        maxes.add(out["suggestion"]["max_lr"])
        if name == "curve.csv":
            assert (
                len(out["curve"]["val_loss"]) == 25 and "val loss lowest" in out["suggestion"]["explanation"]
            )
    assert len(maxes) <= 2  # the same curve reads the same whatever the file format
    text = _cli("lr-read", str(tmp_path / "history.json")).stdout
    assert (
        "LR range test: loss vs learning rate" in text and "Use 1cycle LR" in text and "OneCycleLR(" in text
    )

    # the API's own result, saved as JSON, reads back to the same suggestion
    api_result = tuneassist.api.read_range_test(tmp_path / "history.json")
    saved = _write(tmp_path / "saved.json", json.dumps(api_result.to_dict()))
    again = json.loads(_cli("lr-read", str(saved), "--json").stdout)
    assert again["suggestion"]["max_lr"] == api_result.suggestion.max_lr


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("missing.json", None, "no such file"),
        ("keys.json", '{"learning": [1, 2], "x": 3}', "no 'lr' and 'loss' lists (keys: learning, x)"),
        ("cols.csv", "a,b\n1,2\n", "no lr and loss columns (found: a, b)"),
        ("broken.json", '{"lr": [1, 2', "not valid JSON"),
        ("text.csv", "lr,loss\n0.1,abc\n", "has loss 'abc', not a number"),
        (
            "falling.csv",
            "lr,loss\n" + "\n".join(f"{1 / (i + 1)},{i}" for i in range(20)),
            "LRs must not decrease",
        ),
        ("empty.csv", "", "is empty"),
        ("lengths.json", '{"lr": [0.1, 0.2, 0.3], "loss": [1, 2]}', "3 LRs but 2 losses"),
    ],
)
def test_lr_read_bad_files_end_in_one_line_naming_the_fix(
    tmp_path: Path, name: str, text: str | None, says: str
) -> None:
    path = tmp_path / name if text is None else _write(tmp_path / name, text)
    out = _cli("lr-read", str(path), check=False)
    assert out.returncode == 2, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_a_tracked_run_shows_in_the_tui_with_its_diagnosis(tmp_path: Path) -> None:
    import asyncio

    from test_tui_screens import flat, screen_text

    from tuneassist.tui.app import TuneApp

    ws = tmp_path / "ws"
    hp = {"lr_max": 0.1, "weight_decay": 1e-4, "batch_size": 64}
    with tuneassist.track(
        "mine", hparams=hp, model="my-net", steps_per_epoch=20, total_steps=200, workspace=ws
    ) as run:
        for s in range(200):
            val = {"val_loss": 2 * math.exp(-s / 60) + 0.3, "val_acc": 0.5} if s % 10 == 9 else {}
            run.log(s, lr=0.1, train_loss=2 * math.exp(-s / 50) + 0.1, **val)

    async def main() -> tuple[str, str]:
        app = TuneApp(workspace=ws, manage_queue=False, poll_seconds=0.2)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            app.action_goto("runs")
            await pilot.pause(0.5)
            table = screen_text(app)
            await pilot.press("enter")
            await pilot.pause(0.5)
            return table, screen_text(app)

    table, detail = asyncio.run(main())
    assert "track" in table and "finished" in table
    assert f"Run {run.run_id} · track" in detail and "my-net" in detail and "loss vs epoch" in detail
    assert "Diagnosis: underfitting" in flat(detail) and "raise the max LR to 0.2" in flat(detail)
