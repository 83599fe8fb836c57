"""tools/convert_checkpoint.py on a stage checkpoint of this project: a slim model file (the model, its
config, stage and iteration; no optimiser, RNG or discriminator state), written atomically, that loads
wherever a trained model does and is refused where a resume needs training state; and `--print-config`,
whose YAML recreates the run's config. (Released checkpoints: tests/modeling/test_released_checkpoints.py.)"""
from __future__ import annotations

import os

import pytest
import torch
from torch.serialization import get_unsafe_globals_in_checkpoint

from conftest import load_tool, restored_spcl_logger, run_tool
from spcl.config import load_config
from spcl.engine.checkpoint import Checkpointer, unreadable
from spcl.modeling import build_discriminator, build_segmentor, load_trained_segmentor

pytestmark = pytest.mark.usefixtures("on_the_cpu")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPTS = ["MODEL.BACKBONE", "resnet18", "MODEL.WEIGHTS", "", "INPUT.TEST_SIZE", "[32, 16]"]


def _tool(*args):
    return run_tool("convert_checkpoint.py", *args)


def _stage(cfg, folder):
    """A checkpoint as adv_warmup writes it: segmentor, discriminator, their optimisers (with momentum and
    Adam state), RNG states, stage name and config."""
    torch.manual_seed(0)
    model, disc = build_segmentor(cfg, load_weights=False), build_discriminator(cfg)
    opts = {"model": torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
            "discriminator": torch.optim.Adam(disc.parameters())}
    (model(torch.randn(1, 3, 16, 32))["logits"].mean() + disc(torch.randn(1, 19, 64, 64)).mean()).backward()
    for opt in opts.values():
        opt.step()
    checkpointer = Checkpointer(folder, {"model": model, "discriminator": disc}, opts)
    return checkpointer, checkpointer.save("model_final", 3, {"stage": "adv_warmup", "config": cfg.dump()},
                                           periodic=False)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(config, stage checkpoint, its checkpointer, slim file, the tool's run)."""
    folder = tmp_path_factory.mktemp("convert")
    cfg = load_config("", OPTS)
    checkpointer, full = _stage(cfg, str(folder / "checkpoints"))
    slim = str(folder / "shared" / "model_slim.pth")
    return cfg, full, checkpointer, slim, _tool(full, slim)


def test_a_stage_checkpoint_becomes_a_slim_model_file(converted):
    cfg, full, _, slim, proc = converted
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {slim} (") and "stage adv_warmup, iteration 3) with its config" in \
        proc.stdout and "left out: discriminator, optimizers, rng" in proc.stdout, proc.stdout
    data = torch.load(slim, weights_only=True)
    assert set(data) == {"model", "iteration", "stage", "config", "converted_from"}
    assert data["iteration"] == 3 and data["stage"] == "adv_warmup" and data["config"] == cfg.dump()
    assert data["converted_from"] == {"path": os.path.abspath(full), "format": "spcl stage checkpoint",
                                      "stage": "adv_warmup", "iteration": 3}
    assert os.path.getsize(slim) < 0.5 * os.path.getsize(full)  # momentum + discriminator + Adam are gone
    assert get_unsafe_globals_in_checkpoint(slim) == []  # plain torch.load reads it


def test_a_slim_best_model_keeps_its_oracle_mark_and_metrics(tmp_path):
    """model_best.pth of PIPELINE.HANDOFF best was chosen by target-val mIoU: its slim copy says so."""
    cfg = load_config("", OPTS)
    checkpointer, _ = _stage(cfg, str(tmp_path / "checkpoints"))
    metrics = {"mIoU": 41.5, "IoU": [41.5] * 19}
    best = checkpointer.save("model_best", 2, {"stage": "adv_warmup", "oracle": True, "metrics": metrics,
                                               "config": cfg.dump()}, periodic=False, pointer=False)
    slim = str(tmp_path / "best_slim.pth")
    proc = _tool(best, slim)
    assert proc.returncode == 0, proc.stderr
    data = torch.load(slim, weights_only=True)
    assert data["oracle"] is True and data["metrics"] == metrics and "left out: discriminator, optimizers, rng" in proc.stdout


def test_the_slim_file_loads_wherever_a_trained_model_does(converted):
    """The same weights as the full checkpoint through load_trained_segmentor (test.py, infer.py, analyze.py,
    the inference stages, the Python API) and found with its iteration by test.py."""
    cfg, full, _, slim, _ = converted
    ref, got = load_trained_segmentor(cfg, full).state_dict(), load_trained_segmentor(cfg, slim).state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    with restored_spcl_logger():
        test_tool = load_tool("test")
    assert test_tool.find_checkpoints(slim) == [(3, slim)]
    # and as MODEL.WEIGHTS, the start of another stage
    model = build_segmentor(load_config("", OPTS[:2] + ["MODEL.WEIGHTS", slim]))
    assert all(torch.equal(model.state_dict()[k], ref[k]) for k in ref)


def test_the_slim_file_cannot_be_resumed_from(converted, tmp_path):
    _, _, checkpointer, slim, _ = converted
    with pytest.raises(KeyError) as e:
        checkpointer.resume(slim)
    message = e.value.args[0]
    assert f"{slim} has no optimiser state for 'model': it is a slim model file (tools/convert_checkpoint.py), " \
           "which cannot be resumed from; give it as MODEL.WEIGHTS" in message
    assert unreadable(slim) == "a slim model file (tools/convert_checkpoint.py), not resumable (no optimiser state)"
    plain = str(tmp_path / "model_only.pth")
    torch.save({"model": torch.load(slim)["model"], "iteration": 5}, plain)
    with pytest.raises(KeyError, match="it is a model-only file, which cannot be resumed from"):
        checkpointer.resume(plain)


def test_print_config_recreates_the_run_config(converted, tmp_path):
    """`--print-config CKPT > m.yaml`, then `--config m.yaml`: the same config as the run's, from the full
    checkpoint and from the slim file."""
    cfg, full, _, slim, _ = converted
    proc = _tool("--print-config", full)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    for path, text in ((full, proc.stdout), (slim, _print_config_in_process(slim))):
        assert text == cfg.dump()
        yaml_file = tmp_path / "m.yaml"
        yaml_file.write_text(text)
        assert load_config(str(yaml_file)).dump() == Checkpointer.stored_config(path)


def _print_config_in_process(path):
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        load_tool("convert_checkpoint").main(["--print-config", path])
    return out.getvalue()


def test_print_config_ends_the_yaml_with_one_newline(capsys):
    """A config stored without its last newline is printed with one (a shell's `> run.yaml` then ends the file),
    one stored with it unchanged."""
    tool = load_tool("convert_checkpoint")
    for stored in ("SEED: 1", "SEED: 1\n"):
        assert tool.print_config("m.pth", {"config": stored}) == {"config": stored}
        assert capsys.readouterr().out == "SEED: 1\n"


def test_what_the_tool_refuses(converted, tmp_path):
    """One-line errors: a file without a config to print, an OUT with --print-config, no OUT, the released-file
    options on our checkpoint, an ImageNet file; nothing is written."""
    _, full, _, _, _ = converted
    tool = load_tool("convert_checkpoint")
    imagenet = str(tmp_path / "imagenet.pth")
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, imagenet)
    prototypes = str(tmp_path / "prototypes.pth")
    torch.save({"prototypes": torch.zeros(19, 512), "counts": torch.ones(19)}, prototypes)
    out = str(tmp_path / "out.pth")
    cases = [(["--print-config", imagenet], f"{imagenet} holds no config"),
             (["--print-config", full, out], "--print-config writes to stdout"),
             ([full], "give IN and OUT"),
             ([full, out, "--backbone", "resnet101"], "--backbone and --bn-eps apply to released"),
             ([imagenet, out], "holds backbone weights only"),
             ([prototypes, out], "holds class prototypes")]
    for argv, needle in cases:
        with pytest.raises(ValueError, match=needle) as e:
            tool.main(argv)
        assert "\n" not in str(e.value)
    assert not os.path.exists(out)


def test_the_slim_file_is_written_atomically(converted, tmp_path, monkeypatch):
    """A write that fails half-way (full disk, kill) leaves an earlier OUT as it was."""
    _, full, _, _, _ = converted
    out = tmp_path / "model_slim.pth"
    out.write_bytes(b"an earlier file")

    def failing_save(obj, f, *args, **kwargs):
        with open(f, "wb") if isinstance(f, (str, os.PathLike)) else open(os.dup(f.fileno()), "wb") as dest:
            dest.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        load_tool("convert_checkpoint").main([full, str(out)])
    assert out.read_bytes() == b"an earlier file"
    assert os.listdir(tmp_path) == ["model_slim.pth"]


def test_converted_from_records_an_absolute_path_for_a_relative_input(converted, tmp_path, monkeypatch):
    """The slim file says where it came from wherever it is read later: a path given relative to the current
    folder is recorded as the absolute path it named."""
    _, full, _, _, _ = converted
    monkeypatch.chdir(os.path.dirname(full))
    load_tool("convert_checkpoint").main([os.path.basename(full), str(tmp_path / "slim.pth")])
    assert torch.load(tmp_path / "slim.pth", weights_only=True)["converted_from"]["path"] == full
