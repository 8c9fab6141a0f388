"""`--image-size N` on `tune`, in the checklist's runs and in profiles (issue 13 item 3): a profile records
the size it was tuned at, and `train --profile` trains at it (an LR tuned at 64x64 is not one for 32x32)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testkit import banded_folder, run_main

from tuneassist.advisor.checklist import Checklist
from tuneassist.errors import UserError
from tuneassist.profiles import load_profile, profile_from_runspec, profile_to_runspec
from tuneassist.spec import RunSpec


def _folder(root: Path, side: int = 48) -> Path:
    return banded_folder(root, ("a", "b"), 12, 4, side)


def test_a_profile_records_the_image_size_and_gives_it_back(tmp_path: Path) -> None:
    spec = RunSpec(data="folder:/photos", image_size=64, schedule="onecycle", epochs=5).validate()
    prof = profile_from_runspec(spec, "photos-64")
    assert prof.image_size == 64 and "image_size = 64" in prof.to_toml()
    path = tmp_path / "p.toml"
    path.write_text(prof.to_toml())
    again = load_profile(path)
    assert again.image_size == 64 and profile_to_runspec(again).image_size == 64
    plain = profile_from_runspec(RunSpec(data="synthetic", schedule="onecycle").validate(), "plain")
    assert plain.image_size is None and "image_size" not in plain.to_toml()
    cases = (('data = "synthetic"', "for folder:PATH data"), ('data = "folder:/x"\nimage_size = 4', "from 8"))
    for bad, why in cases:
        text = prof.to_toml().replace('data = "folder:/photos"', bad)
        if "image_size = 4" in bad:
            text = text.replace("image_size = 64\n", "")
        path.write_text(text)
        with pytest.raises(UserError, match=why):
            load_profile(path)


def test_train_from_a_profile_trains_at_its_image_size_unless_told_otherwise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _folder(tmp_path / "imgs")
    spec = RunSpec(data=f"folder:{root}", image_size=24, schedule="onecycle", epochs=1, batch_size=8)
    path = tmp_path / "tuned.toml"
    path.write_text(profile_from_runspec(spec.validate(), "tuned").to_toml())
    common = ["--data-dir", str(tmp_path / "c"), "--device", "cpu", "--threads", "1", "--steps", "2"]
    common.append("--json")
    # --json gives the start line's facts as fields (tests/test_image_folders.py reads the line itself)
    rc, out, err = run_main(capsys, "train", "--profile", str(path), *common)
    assert rc == 0, err
    facts = json.loads(out)
    assert facts["image_size"] == 24 and facts["num_classes"] == 2 and facts["device"] == "cpu"
    assert facts["train_size"] + facts["val_size"] == 24 and facts["test_size"] == 8  # 12 + 4 per class
    assert facts["streamed"] is False and facts["devices"] == 1
    rc, out, err = run_main(capsys, "train", "--profile", str(path), "--image-size", "16", *common)
    assert rc == 0, err
    assert json.loads(out)["image_size"] == 16
    # another data set than the profile's: the profile's folder size does not apply to it
    rc, out, err = run_main(capsys, "train", "--profile", str(path), "--data", "synthetic:100", *common)
    assert rc == 0, err
    assert json.loads(out)["image_size"] == 32


def test_the_checklist_runs_at_the_size_and_on_the_path_tune_was_given() -> None:
    cl = Checklist(data="folder:/photos", model="simple3", image_size=40, stream=True)
    again = Checklist.from_dict(cl.to_dict())
    for c in (cl, again):
        spec = c._spec()
        assert spec.image_size == 40 and spec.stream is True
    assert Checklist(data="synthetic", model="simple3")._spec().image_size is None


def test_tune_has_the_flags_and_asks_consent_for_user_data(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_main(capsys, "tune", "--help")
    assert rc == 0 and "--image-size" in out and "--stream" in out and "module:function" in out
    rc, _, err = run_main(capsys, "tune", "--data", "examples.my_data:datasets", "--budget", "quick")
    assert rc == 2 and err.strip() == (
        "error: --data examples.my_data:datasets imports your code; add --allow-import to confirm"
    )


def test_tune_probes_memory_at_the_size_it_tunes_at(
    tmp_path: Path, ws: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe measures the activations of the runs' side (a 4x larger side is 16x the memory of a
    sample): `--image-size 64` on a 48x48 folder reaches the probe's command line as 64."""
    import tuneassist.runs.probe_client as probe_client

    seen: list[list[str]] = []

    class _Stop(BaseException):  # past main()'s one-line handler of every Exception
        pass

    def command(*a: object) -> list[str]:
        seen.append(real(*a))  # type: ignore[arg-type]
        raise _Stop

    real = probe_client.probe_command
    monkeypatch.setattr(probe_client, "probe_command", command)
    folder = _folder(tmp_path)
    with pytest.raises(_Stop):
        run_main(capsys, "tune", "--data", f"folder:{folder}", "--image-size", "64", "--budget", "quick")
    cmd = seen[0]
    assert cmd[cmd.index("--image-size") + 1] == "64" and cmd[cmd.index("--data") + 1] == f"folder:{folder}"
    assert "--image-size" not in real("simple3", "synthetic")  # without one: the data's own side


def test_tune_refuses_a_bad_image_size_before_the_probe(
    tmp_path: Path, ws: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tuneassist.runs.probe_client as probe_client

    def probed(*a: object, **k: object) -> None:
        raise AssertionError("the probe ran before the image size was checked")

    monkeypatch.setattr(probe_client, "probe_in_subprocess", probed)
    folder = _folder(tmp_path)
    argv = ("tune", "--data", f"folder:{folder}", "--image-size", "5", "--budget", "quick")
    rc, _, err = run_main(capsys, *argv)
    assert rc == 2 and err.strip() == (
        "error: image size 5 must be a whole number of pixels from 8 to 1024, e.g. --image-size 64"
    )
