"""explain.py's contract: every command listed without importing it, one exit-code rule, ``--debug``, and the
one-line message of an error raised inside a DataLoader worker."""
from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from xcos_lightning.cli.explain import COMMANDS, build_parser, main
from xcos_lightning.errors import DataFormatError, ModelSpecError, error_message
from xcos_lightning.io.pretrained import list_pretrained_formats
from xcos_lightning.io.spec import MODEL_SPEC_HELP

# An embedding model SPEC (module:function) written into the test's folder.
TINY_MODEL = '''
import torch
from torch import nn

def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
'''


@pytest.fixture
def tiny_spec(tmp_path, monkeypatch) -> str:
    (tmp_path / "tiny_models.py").write_text(TINY_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "tiny_models:tiny"


def faces(root, names: dict[str, int], corrupt: str | None = None) -> None:
    """LFW-style identity folders ``root/<name>/<name>_000<i>.jpg``; ``corrupt`` names one file of junk bytes."""
    rng = np.random.default_rng(0)
    for name, count in names.items():
        (root / name).mkdir(parents=True)
        for i in range(1, count + 1):
            path = root / name / f"{name}_{i:04d}.jpg"
            if path.name == corrupt:
                path.write_bytes(b"not an image at all")
            else:
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)


def test_the_help_lines_are_the_modules_own():
    """COMMANDS repeats each module's help line so that --help needs no import: they must not drift."""
    full = build_parser(COMMANDS)
    light = build_parser()
    helps = {a.dest: a.help for a in full._subparsers._group_actions[0]._choices_actions}
    assert helps == {a.dest: a.help for a in light._subparsers._group_actions[0]._choices_actions}
    assert helps == {name: line for name, (_, line) in COMMANDS.items()}


def test_help_lists_every_command_without_importing_them():
    code = ("import sys; from xcos_lightning.cli.explain import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "print(sorted(m for m in sys.modules if m.startswith('xcos_lightning.cli.') or m in "
            "('torch', 'lightning', 'albumentations', 'wandb', 'torchmetrics')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    *help_lines, imported = proc.stdout.strip().splitlines()
    assert all(any(line.strip().startswith(name) for line in help_lines) for name in COMMANDS)
    assert imported == "['xcos_lightning.cli.explain']"


@pytest.mark.parametrize("command", ["verify", "pair", "export"])
def test_light_commands_do_not_import_lightning_albumentations_wandb(command):
    """Nor torchmetrics (seconds of start-up; verify needs only the functional metrics)."""
    code = (f"import sys, importlib; importlib.import_module({COMMANDS[command][0]!r}); "
            "print([m for m in ('lightning', 'albumentations', 'wandb', 'torchmetrics') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_model_spec_help_names_every_form():
    for fmt in list_pretrained_formats():
        assert fmt.split("-")[0] in MODEL_SPEC_HELP
    assert all(form in MODEL_SPEC_HELP for form in (".ckpt", "package.module:function", "trusted"))
    spec_arg = next(a for a in build_parser(["export"])._subparsers._group_actions[0].choices["export"]._actions
                    if a.dest == "spec")
    assert spec_arg.help == MODEL_SPEC_HELP


# One bad input per command, reported as an xcos_lightning error.
BAD_INPUT = {
    "benchmark": (["benchmark", "--model", "{spec}", "--data", "lfw:{tmp}/none", "--methods", "random"],
                  DataFormatError),
    "verify": (["verify", "--model", "{spec}", "--data", "lfw:{tmp}/none"], DataFormatError),
    "pair": (["pair", "{tmp}/a.jpg", "{tmp}/b.jpg", "--model", "{spec}", "--methods", "random", "--out",
              "{tmp}/f.png"], DataFormatError),
    "compare": (["compare", "{spec}", "--data", "lfw:{tmp}/none", "--out", "{tmp}/cmp"], DataFormatError),
    "export": (["export", "{spec}", "--format", "pickle", "--out", "{tmp}/m"], ModelSpecError),
}


@pytest.mark.parametrize("command", sorted(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_2_and_debug_shows_the_exception(command, tiny_spec, tmp_path, capsys):
    argv, error = BAD_INPUT[command]
    argv = [a.format(spec=tiny_spec, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"explain.py {command}: error: "), err
    with pytest.raises(error):
        main(["--debug", *argv])
    with pytest.raises(error):
        main([*argv, "--debug"])


def test_a_failed_parity_check_exits_1(tiny_spec, tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["export", tiny_spec, "--format", "torchscript", "--out", str(out)]) == 0
    assert main(["export", tiny_spec, "--format", "torchscript", "--out", str(out), "--tolerance", "-1"]) == 1
    assert "parity: FAILED" in capsys.readouterr().out


def test_a_corrupt_image_in_a_dataloader_worker_is_one_line(tiny_spec, tmp_path, capsys):
    names = ["Ann", "Bob", "Cid", "Dee", "Eve"]
    faces(tmp_path, dict.fromkeys(names, 3), corrupt="Eve_0003.jpg")
    genuine = [f"{n}\t{i}\t{j}" for n in names for i, j in ((1, 2), (1, 3), (2, 3))]
    impostor = [f"{a}\t{i}\t{b}\t{i}" for k, a in enumerate(names) for b in names[k + 1:] for i in (1, 3)]
    (tmp_path / "pairs.txt").write_text("\n".join(genuine + impostor) + "\n")
    code = main(["verify", "--model", tiny_spec, "--data", f"pairs:{tmp_path}:{tmp_path / 'pairs.txt'}",
                 "--num-workers", "1", "--no-flip"])
    err = capsys.readouterr().err
    assert code == 2
    message = err.strip().splitlines()[-1]
    assert message.startswith("explain.py verify: error: ") and "Eve_0003.jpg" in message, err
    assert "Original Traceback" not in err and "DataLoader worker" not in err


def test_error_message_unwraps_only_worker_exceptions():
    wrapped = DataFormatError("Caught DataFormatError in DataLoader worker process 0.\nOriginal Traceback (most "
                              "recent call last):\n  File \"x.py\", line 1, in f\n    raise DataFormatError(m)\n"
                              "xcos_lightning.errors.DataFormatError: a.jpg: cannot decode\nthe image\n")
    assert error_message(wrapped) == "a.jpg: cannot decode\nthe image"
    assert error_message(DataFormatError("a.jpg: cannot decode")) == "a.jpg: cannot decode"
    assert error_message(ValueError("Caught ValueError in x")) == "Caught ValueError in x"


def test_every_command_module_has_the_dispatch_interface():
    for module_name, _ in COMMANDS.values():
        module = importlib.import_module(module_name)
        assert callable(module.add_parser) and callable(module.run)
