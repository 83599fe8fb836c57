"""`tools/train.py --check`: the checks a run makes before it writes anything (config keys and values, every
input present, a rerun's config against the run folder's), without running it and without writing. Last,
`tools/train.py --stage NAME` itself: its printed result with the stage's wall time, and a rerun that skips."""
import json
import os

import pytest

from conftest import load_tool, restored_spcl_logger, tiny_opts
from spcl.config import ConfigDriftError

TOY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs", "toy.yaml")


@pytest.fixture
def train():
    with restored_spcl_logger():
        yield load_tool("train")


def _tiny_opts(toy_root, out):
    """The toy config on the tiny generated dataset, into `out`."""
    return ["OUTPUT_DIR", out, "DATASETS.DATA_DIR", toy_root, "DATASETS.TOY.GENERATE", "False"]


def test_check_passes_a_runnable_config_and_writes_nothing(train, toy_root, prototypes, pseudo_dir, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert train.main(["--check", "--config", TOY] + _tiny_opts(toy_root, out)) == 0
    assert "toy.yaml: config and inputs OK (stages adv_warmup → prototypes" in capsys.readouterr().out
    assert not os.path.exists(out)
    assert train.main(["--check", "--stage", "align", "--config", TOY] + _tiny_opts(toy_root, out)
                      + ["PROTOTYPE.PATH", prototypes, "DATASETS.PSEUDO_DIR", pseudo_dir]) == 0
    assert "(stage align;" in capsys.readouterr().out and not os.path.exists(out)


@pytest.mark.parametrize("check", [True, False], ids=["check", "run"])
def test_a_stage_without_its_inputs_is_refused_before_anything_is_written(train, toy_root, prototypes, tmp_path, check):
    """`--stage align` reads the prototypes and the pseudo labels, `--stage pseudo_labels` a trained model: each one
    unset, or set to a path that is not there, is named; --check used to say OK, and the run failed after it had
    made its folder (the pseudo-label folder '' as a damaged data file)."""
    out = str(tmp_path / "run")
    flag = ["--check"] if check else []
    opts = ["--config", TOY] + _tiny_opts(toy_root, out)
    with pytest.raises(ValueError, match=r"stage align cannot run:\n  - PROTOTYPE.PATH is not set: stage align reads "
                                         r"the prototypes.*\n  - DATASETS.PSEUDO_DIR is not set: stage align reads "
                                         r"the pseudo dir, the pseudo_labels stage's labels/ folder"):
        train.main(flag + ["--stage", "align"] + opts)
    missing = str(tmp_path / "labels")
    with pytest.raises(ValueError, match=rf"cannot run:\n  - DATASETS.PSEUDO_DIR = '{missing}' is missing \(the "
                                         r"pseudo-label folder\)$"):
        train.main(flag + ["--stage", "align"] + opts + ["PROTOTYPE.PATH", prototypes, "DATASETS.PSEUDO_DIR", missing])
    with pytest.raises(ValueError, match=r"MODEL.WEIGHTS is not set: stage pseudo_labels reads the checkpoint"):
        train.main(flag + ["--stage", "pseudo_labels"] + opts)
    # align without the target term reads no pseudo labels
    with pytest.raises(ValueError, match=r"cannot run:\n  - PROTOTYPE.PATH is not set[^\n]*$"):
        train.main(flag + ["--stage", "align"] + opts + ["LOSS.CONTRAST.TARGET", "False"])
    assert not os.path.exists(out)


def test_check_of_a_stage_compares_the_config_with_its_folder_and_says_what_a_rerun_does(
        train, toy_root, prototypes, pseudo_dir, tmp_path, capsys):
    """The pipeline's --check compared a rerun's config with the run folder's; --check --stage did not, and said
    OK to a rerun the run itself then refused."""
    from spcl.config import load_config

    out = str(tmp_path / "run")
    opts = ["--config", TOY] + _tiny_opts(toy_root, out) + ["PROTOTYPE.PATH", prototypes,
                                                             "DATASETS.PSEUDO_DIR", pseudo_dir]
    folder = os.path.join(out, "align")
    os.makedirs(os.path.join(folder, "checkpoints"))
    with open(os.path.join(folder, "config.yaml"), "w") as f:
        f.write(load_config(TOY, opts[2:]).dump())

    def check(*more):
        assert train.main(["--check", "--stage", "align"] + opts + list(more)) == 0
        return capsys.readouterr().out.splitlines()[-1]

    # no checkpoint yet: it starts from iteration 0, and the config of a stage that made nothing is not held
    # against it
    assert check("ALIGN.BASE_LR", "0.1") == "a rerun: align runs"
    open(os.path.join(folder, "checkpoints", "model_0000002.pth"), "w").close()
    assert check() == "a rerun: align resumes"
    with pytest.raises(ConfigDriftError, match=r"stage align in .* 1 key\(s\) differ:\n  ALIGN.BASE_LR: 0.0005 then, "
                                               r"0.1 now"):
        check("ALIGN.BASE_LR", "0.1")
    assert check("ALIGN.BASE_LR", "0.1", "PIPELINE.ALLOW_CONFIG_CHANGE", "True") == "a rerun: align resumes"
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump({"status": "done"}, f)
    assert check() == "a rerun: align finished"
    with pytest.raises(ConfigDriftError, match=r"finished stage align in .*\n  SEED: 0 then, 3 now"):
        check("SEED", "3")


def test_check_lists_every_missing_input_and_a_changed_config(train, toy_root, tmp_path):
    out = str(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match=r"4 input\(s\) of this run are missing") as err:
        train.main(["--check", "--config", TOY, "OUTPUT_DIR", out, "DATASETS.TOY.GENERATE", "False",
                    "DATASETS.DATA_DIR", str(tmp_path / "no_data"), "MODEL.WEIGHTS", str(tmp_path / "w.pth")])
    assert all(k in str(err.value) for k in ("w.pth", "gta5_train", "cityscapes_train", "cityscapes_val"))
    assert not os.path.exists(out)
    # a run folder made with this config, which has saved a checkpoint: the same command passes, SEED 3 is
    # named as the one change (before the run has made anything, its config is not held against a rerun)
    from spcl.config import load_config

    opts = ["--config", TOY] + _tiny_opts(toy_root, out)
    os.makedirs(os.path.join(out, "0_adv_warmup", "checkpoints"))
    with open(os.path.join(out, "config.yaml"), "w") as f:
        f.write(load_config(TOY, opts[2:]).dump())
    assert train.main(["--check"] + opts + ["SEED", "3"]) == 0
    open(os.path.join(out, "0_adv_warmup", "checkpoints", "model_0000010.pth"), "w").close()
    assert train.main(["--check"] + opts) == 0
    with pytest.raises(ConfigDriftError, match=r"1 key\(s\) differ:\n  SEED: 0 then, 3 now"):
        train.main(["--check"] + opts + ["SEED", "3"])
    assert sorted(os.listdir(out)) == ["0_adv_warmup", "config.yaml"]


def _run_folder(out, config_opts, stages):
    """A run folder as a pipeline leaves it: config.yaml, and per stage folder a manifest (`manifest`) and/or
    the ids it was started after (`after`); without writing any model."""
    import json

    from spcl.config import load_config

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.yaml"), "w") as f:
        f.write(load_config(TOY, config_opts).dump())
    for name, manifest, after in stages:
        os.makedirs(os.path.join(out, name))
        if manifest is not None:
            json.dump({"status": "done", **manifest}, open(os.path.join(out, name, "manifest.json"), "w"))
        if after is not None:
            json.dump({"after": after}, open(os.path.join(out, name, "upstream.json"), "w"))


def test_check_says_what_a_rerun_does_with_each_stage_folder(train, toy_root, tmp_path, capsys):
    """Finished stages are skipped, an unfinished one resumes, and a stage made after another version of
    an earlier one (that stage was deleted and rerun since) is set aside; the stages after one that runs
    are set aside too, since they were made from outputs it replaces."""
    def plan(out, stages):
        opts = _tiny_opts(toy_root, out)
        _run_folder(out, opts, stages)
        assert train.main(["--check", "--config", TOY] + opts) == 0
        assert sorted(os.listdir(out)) == sorted(["config.yaml"] + [s[0] for s in stages])  # nothing moved
        return capsys.readouterr().out.splitlines()[-1]

    a, b = {"0_adv_warmup": "a"}, {"0_adv_warmup": "a", "1_prototypes": "b"}
    warmup = ("0_adv_warmup", {"id": "a", "after": {}}, None)
    stages = [warmup, ("1_prototypes", {"id": "b", "after": a}, None), ("2_pseudo_labels", None, b),
              ("4_pseudo_labels", {"id": "d", "after": {}}, None)]
    assert plan(str(tmp_path / "run"), stages) == (
        "a rerun: 0_adv_warmup finished; 1_prototypes finished; 2_pseudo_labels resumes; 3_align runs; "
        "4_pseudo_labels set aside and run again; 5_self_train runs")
    # a training stage that was started but saved no checkpoint starts from iteration 0; with one, it resumes
    c = {**b, "2_pseudo_labels": "c"}
    stages = [warmup, ("1_prototypes", {"id": "b", "after": a}, None), ("2_pseudo_labels", {"id": "c", "after": b},
                                                                        None), ("3_align", None, c)]
    assert plan(str(tmp_path / "started"), stages).startswith(
        "a rerun: 0_adv_warmup finished; 1_prototypes finished; 2_pseudo_labels finished; 3_align runs; ")
    os.makedirs(str(tmp_path / "started" / "3_align" / "checkpoints"))
    open(str(tmp_path / "started" / "3_align" / "checkpoints" / "model_0000002.pth"), "w").close()
    assert train.main(["--check", "--config", TOY] + _tiny_opts(toy_root, str(tmp_path / "started"))) == 0
    assert "; 3_align resumes; " in capsys.readouterr().out
    # the prototypes were rerun after the pseudo labels had started
    stages = [warmup, ("1_prototypes", {"id": "B", "after": a}, None), ("2_pseudo_labels", None, b)]
    assert plan(str(tmp_path / "rerun"), stages).startswith(
        "a rerun: 0_adv_warmup finished; 1_prototypes finished; 2_pseudo_labels set aside and run again; ")
    # a run from before stage ids, its prototypes folder deleted: what follows is made from old outputs
    assert plan(str(tmp_path / "old"), [("0_adv_warmup", {}, None), ("2_pseudo_labels", {}, None)]).startswith(
        "a rerun: 0_adv_warmup finished; 1_prototypes runs; 2_pseudo_labels set aside and run again; ")


def test_check_names_a_run_writing_into_the_folder_now(train, toy_root, tmp_path):
    """The login-node case: the job is already running there (it holds OUTPUT_DIR/.lock)."""
    from spcl.utils.run_lock import LOCK, RunInUse, run_lock

    out = str(tmp_path / "run")
    opts = ["--check", "--config", TOY] + _tiny_opts(toy_root, out)
    with run_lock(out):
        for stage in ([], ["--stage", "align"]):
            with pytest.raises(RunInUse, match=rf"OUTPUT_DIR {out} is in use by another run \(pid {os.getpid()} on "):
                train.main(stage + opts)
    assert train.main(opts) == 0  # a lock file left by a run that ended holds nothing
    assert os.listdir(out) == [LOCK]


def test_check_loads_the_weights_it_names(train, toy_root, tmp_path, capsys):
    """MODEL.WEIGHTS must read and fit the model, not only exist; a stage that needs a trained model
    refuses an ImageNet backbone file."""
    import torch
    import torchvision

    out = str(tmp_path / "run")
    imagenet = str(tmp_path / "resnet18-imagenet.pth")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), imagenet)
    opts = ["--config", TOY] + _tiny_opts(toy_root, out) + ["MODEL.BACKBONE", "resnet18"]
    assert train.main(["--check"] + opts + ["MODEL.WEIGHTS", imagenet]) == 0
    assert "config and inputs OK" in capsys.readouterr().out
    with pytest.raises(ValueError, match="holds backbone weights only"):
        train.main(["--check", "--stage", "pseudo_labels"] + opts + ["MODEL.WEIGHTS", imagenet])
    torn = tmp_path / "torn.pth"
    torn.write_bytes(open(imagenet, "rb").read()[:1000])
    with pytest.raises(IOError, match=f"cannot read weights file {torn}"):
        train.main(["--check"] + opts + ["MODEL.WEIGHTS", str(torn)])
    with pytest.raises(ValueError, match=r"key 'backbone\.layer1\.0\.conv1\.weight' has shape"):
        train.main(["--check"] + opts + ["MODEL.WEIGHTS", imagenet, "MODEL.BACKBONE", "resnet50"])
    assert not os.path.exists(out)


GENERATED = ["DATASETS.TOY.GENERATE", "True", "DATASETS.TOY.NUM_SOURCE", "3", "DATASETS.TOY.NUM_TARGET_TRAIN", "2",
             "DATASETS.TOY.NUM_TARGET_VAL", "2", "DATASETS.TOY.SIZE", "[64, 32]", "INPUT.SOURCE_SIZE", "[64, 32]",
             "INPUT.TARGET_SIZE", "[64, 32]", "INPUT.TEST_SIZE", "[64, 32]"]


def _images(root):
    return {p: open(os.path.join(d, p), "rb").read() for d, _, files in os.walk(root) for p in files
            if p.endswith(".png")}


def test_a_refused_run_leaves_the_generated_data_as_they_were(train, tmp_path):
    """A rerun with another toy seed is refused as a config change, and a run into a folder in use as such; both
    used to regenerate DATASETS.DATA_DIR first, under the finished (or running) run made from it."""
    from spcl.config import load_config
    from spcl.toy import generate_toy_dataset
    from spcl.utils.run_lock import RunInUse, run_lock

    data, out = str(tmp_path / "data"), str(tmp_path / "run")
    opts = ["OUTPUT_DIR", out, "DATASETS.DATA_DIR", data] + GENERATED
    generate_toy_dataset(data, seed=0, num_source=3, num_target_train=2, num_target_val=2, size=(64, 32))
    before = _images(data)
    os.makedirs(os.path.join(out, "0_adv_warmup"))
    with open(os.path.join(out, "config.yaml"), "w") as f:  # a run made with toy seed 0, one stage finished
        f.write(load_config(TOY, opts).dump())
    with open(os.path.join(out, "0_adv_warmup", "manifest.json"), "w") as f:
        f.write("{}")
    with pytest.raises(ConfigDriftError, match="DATASETS.TOY.SEED: 0 then, 1 now"):
        train.main(["--config", TOY] + opts + ["DATASETS.TOY.SEED", "1"])
    assert _images(data) == before
    with run_lock(out):  # another run writes there now
        for stage in ([], ["--stage", "adv_warmup"]):
            with pytest.raises(RunInUse, match="is in use by another run"):
                train.main(["--allow-config-change", "--config", TOY] + stage + opts + ["DATASETS.TOY.SEED", "1"])
    assert _images(data) == before


def test_a_stage_prints_its_result_and_wall_time_and_a_rerun_the_recorded_one(train, toy_root, tmp_path, capsys):
    from spcl.engine.pipeline import duration

    out = str(tmp_path / "run")
    args = ["--config", TOY, "--stage", "source_only"] + tiny_opts(toy_root, out)
    assert train.main(args) == 0
    seconds = json.load(open(os.path.join(out, "source_only", "manifest.json")))["seconds"]
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("source_only    target mIoU")
    assert lines[-1] == f"wall time: source_only {duration(seconds)} ({duration(seconds)} in all)"
    assert train.main(args) == 0
    again = capsys.readouterr().out.strip().splitlines()
    assert again[-3].startswith("stage source_only already finished in") and again[-2:] == lines[-2:]


@pytest.mark.parametrize("record", ["manifest.json", "upstream.json"])
@pytest.mark.parametrize("stage", ["", "source_only"], ids=["pipeline", "stage"])
@pytest.mark.parametrize("check", [True, False], ids=["check", "run"])
def test_a_stage_folder_as_output_dir_is_refused_before_anything_is_written(train, toy_root, tmp_path, record, stage,
                                                                            check):
    """A stage folder given as OUTPUT_DIR (a finished one holds manifest.json, a started one upstream.json) used to
    be taken as a run folder: the run made its stage folders inside the stage's. It is refused, naming the run's."""
    folder = tmp_path / "run" / "1_align"
    folder.mkdir(parents=True)
    (folder / record).write_text("{}")
    argv = (["--check"] if check else []) + (["--stage", stage] if stage else []) + ["--config", TOY]
    with pytest.raises(ValueError, match=rf"^OUTPUT_DIR {folder} is a stage folder \(it holds {record}\): a run "
                                         rf"writes its stage folders inside OUTPUT_DIR; give the run's folder "
                                         rf"\({tmp_path / 'run'}\) to resume that run, or a new folder$"):
        train.main(argv + _tiny_opts(toy_root, str(folder)))
    assert os.listdir(folder) == [record]


def test_check_names_an_empty_list_file_where_the_run_makes_its_data(train, toy_root, tmp_path):
    """With DATASETS.TOY.GENERATE --check does not read the data (the run writes them), but a list file is the
    user's own: one that selects nothing is named there, not when the stage has trained (TEST_LIST)."""
    empty = tmp_path / "empty.txt"
    empty.write_text("# none\n")
    opts = ["--check", "--config", TOY, "OUTPUT_DIR", str(tmp_path / "run"), "DATASETS.DATA_DIR", toy_root]
    with pytest.raises(ValueError, match=rf"^DATASETS.TEST_LIST {empty} lists no files"):
        train.main(opts + ["DATASETS.TEST_LIST", str(empty)])
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("stage", ["", "source_only"], ids=["pipeline", "stage"])
@pytest.mark.parametrize("check", [True, False], ids=["check", "run"])
def test_a_file_where_a_stage_folder_goes_is_refused_before_anything_is_written(train, toy_root, tmp_path, stage,
                                                                               check):
    """A file named like a stage folder in OUTPUT_DIR: --check passed it, and the run stopped when the stage made
    its folder, with "[Errno 17] File exists" and the run's records written."""
    out = tmp_path / "run"
    out.mkdir()
    name = stage or "3_align"
    (out / name).write_text("a note")
    argv = (["--check"] if check else []) + (["--stage", stage] if stage else []) + ["--config", TOY]
    with pytest.raises(NotADirectoryError, match=rf"^stage folder {out / name} is a file, not a folder: move or "
                                                 rf"rename the file, the run makes the stage's outputs there$"):
        train.main(argv + _tiny_opts(toy_root, str(out)))
    assert os.listdir(out) == [name] and (out / name).read_text() == "a note"


@pytest.mark.parametrize("stage", [[], ["--stage", "adv_warmup"]], ids=["pipeline", "stage"])
def test_check_reads_the_data_folders_unless_the_run_generates_them(train, tmp_path, capsys, stage):
    """With DATASETS.TOY.GENERATE the run writes DATASETS.DATA_DIR itself, so --check does not look for it there
    (and generates nothing); without it, the whole pipeline's check and one stage's both name each missing set."""
    out, data = str(tmp_path / "run"), str(tmp_path / "no_data")
    opts = ["--check", "--config", TOY] + stage + ["OUTPUT_DIR", out, "DATASETS.DATA_DIR", data]
    assert train.main(opts + ["DATASETS.TOY.GENERATE", "True"]) == 0
    assert "config and inputs OK" in capsys.readouterr().out and not os.path.exists(data)
    with pytest.raises(FileNotFoundError, match=r"3 input\(s\) of this run are missing") as err:
        train.main(opts + ["DATASETS.TOY.GENERATE", "False"])
    assert all(k in str(err.value) for k in ("gta5_train", "cityscapes_train", "cityscapes_val"))
    assert not os.path.exists(out) and not os.path.exists(data)
