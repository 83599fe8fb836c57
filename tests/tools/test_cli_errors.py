"""What a user sees on ordinary mistakes: one line that says what to fix (exit 2), the traceback
only with --debug, Ctrl-C with how to resume, and --help texts that explain resume."""
import os
import subprocess
import sys

import pytest

from conftest import load_tool, restored_spcl_logger, run_tool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY = os.path.join(ROOT, "configs", "toy.yaml")


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr
    # one error line and the --debug hint close the output (log lines may come before them)
    assert "error:" in lines[-2] and "--debug" in lines[-1], proc.stderr
    assert sum("error:" in ln for ln in lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[-2], lines[-2]


def test_missing_config_file(tmp_path):
    """In a process of its own, as a user runs it: the script's entry, its import path and exit code."""
    proc = subprocess.run([sys.executable, "tools/train.py", "--config", str(tmp_path / "nope.yaml")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    _one_line_error(proc, "config file not found", "nope.yaml")
    path = list(sys.path)
    assert run_tool("train.py", "--config", str(tmp_path / "nope.yaml")).stderr == proc.stderr  # the same in-process
    assert sys.path == path  # the tool's own sys.path.insert is undone
    _one_line_error(run_tool("train.py", "--config", "configs"), "config file configs is a folder: give a YAML file, "
                                                                  "e.g. configs/")


def test_check_data_mistakes_are_one_line_with_exit_2(tmp_path):
    """Exit 1 means bad data files; a mistake in the command or config is 2 and one line, as in the other tools."""
    _one_line_error(run_tool("check_data.py", "--config", TOY, "ALIGN.BASE_LRR", "0.1"), "ALIGN.BASE_LRR")


def test_run_outside_the_repository_names_where_relative_paths_were_read(tmp_path):
    """Config paths are read from the current directory; a tool run elsewhere says which directory that was,
    for every missing input and only for relative paths."""
    def run_here(*args, tool="train.py"):
        return run_tool(tool, *args, cwd=str(tmp_path))

    here = f"read relative to the current directory {tmp_path}"
    _one_line_error(run_here("--config", "nope.yaml"), "config file not found: nope.yaml, " + here)
    _one_line_error(run_here("--config", TOY, "--checkpoint", "m.pth", "--input", "x", tool="infer.py"),
                    "checkpoint not found: m.pth, " + here)
    _one_line_error(run_here("--config", TOY, "--checkpoint", "m.pth", tool="test.py"),
                    "checkpoint not found: m.pth, " + here)
    proc = run_here("--config", TOY, "OUTPUT_DIR", "out", "DATASETS.TOY.GENERATE", "False",
                    "MODEL.WEIGHTS", "w.pth")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    missing = [ln for ln in proc.stderr.splitlines() if ln.startswith("  - ")]
    assert len(missing) == 4, proc.stderr  # the weights and the three datasets of the toy config
    assert all(here in ln for ln in missing), missing
    assert "MODEL.WEIGHTS = 'w.pth', " + here in missing[0]
    absolute = str(tmp_path / "data")
    proc = run_here("--config", TOY, "OUTPUT_DIR", "out", "DATASETS.TOY.GENERATE", "False",
                    "DATASETS.DATA_DIR", absolute)
    assert absolute in proc.stderr and "current directory" not in proc.stderr, proc.stderr


def test_convert_checkpoint_missing_or_unreadable_input(tmp_path):
    _one_line_error(run_tool("convert_checkpoint.py", "nope.pth", str(tmp_path / "o.pth")),
                    "weights file not found: 'nope.pth'")
    _one_line_error(run_tool("convert_checkpoint.py", "README.md", str(tmp_path / "o.pth")),
                    "cannot read weights file README.md")
    assert not (tmp_path / "o.pth").exists()


def test_convert_checkpoint_into_its_own_input_is_refused(tmp_path):
    original = tmp_path / "released.pth"
    original.write_bytes(b"the authors' file")
    for out in (str(original), os.path.join(str(tmp_path), ".", "released.pth")):
        _one_line_error(run_tool("convert_checkpoint.py", str(original), out), "OUT is IN", "kept as it is")
    assert original.read_bytes() == b"the authors' file"


def test_output_dir_that_is_a_file(tmp_path):
    afile = tmp_path / "results"
    afile.write_text("keep me")
    _one_line_error(run_tool("train.py", "--config", TOY, "OUTPUT_DIR", str(afile)),
                    f"OUTPUT_DIR {afile} is a file, not a folder")
    with restored_spcl_logger(), pytest.raises(ValueError, match=f"^--output {afile} is a file, not a folder"):
        load_tool("gen_pseudo").main(["--config", TOY, "--checkpoint", "c.pth", "--output", str(afile)])  # as typed
    inner = os.path.join(str(afile), "sub", "out")  # a file further up: named, not "[Errno 20] Not a directory"
    with restored_spcl_logger(), pytest.raises(ValueError, match=f"^--output {inner} lies under {afile}, which is a "
                                                                 "file, not a folder: give a folder"):
        load_tool("gen_pseudo").main(["--config", TOY, "--checkpoint", "c.pth", "--output", inner])
    assert afile.read_text() == "keep me"


def test_an_output_folder_that_cannot_be_written_is_named_before_anything_runs(tmp_path, monkeypatch):
    """OUTPUT_DIR (or --output) under a folder this user cannot write: one line naming the key and the folder,
    from the tools' common set-up, before anything runs (--check included, and before a run generates the toy
    data); it used to stop at the first write with "[Errno 30] Read-only file system". As root every folder is writable to os.access, so there the test gives it a non-root user's answer."""
    locked = tmp_path / "shared"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root: os.access as it answers a user without write permission there
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(locked) and mode & os.W_OK
                            else real(p, mode, **kw))
    out, data = locked / "run" / "a", tmp_path / "data"
    expected = (f"cannot be written: {locked} is read-only to this user (no permission, or a read-only file "
                "system); give a folder you can write to")
    with restored_spcl_logger(), pytest.raises(ValueError) as e:
        load_tool("train").main(["--check", "--config", TOY, "OUTPUT_DIR", str(out), "DATASETS.DATA_DIR", str(data)])
    assert str(e.value) == f"OUTPUT_DIR {out} {expected}" and not data.exists()
    with restored_spcl_logger(), pytest.raises(ValueError) as e:
        load_tool("gen_pseudo").main(["--config", TOY, "--checkpoint", "c.pth", "--output", str(out)])
    assert str(e.value) == f"--output {out} {expected}"
    from spcl.utils.io import make_folder

    with pytest.raises(PermissionError) as e:
        make_folder(str(out), "OUTPUT_DIR")
    assert str(e.value) == f"[Errno 13] OUTPUT_DIR {out} {expected}"
    locked.chmod(0o755)


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs /sys (Linux)")
def test_a_folder_the_system_refuses_to_make_is_named_with_the_key():
    """Where os.access says yes and mkdir still fails (root on sysfs: EPERM), the error names the key too."""
    from spcl.utils.io import make_folder

    with pytest.raises(OSError) as e:
        make_folder("/sys/kernel/spcl_test_out", "OUTPUT_DIR")
    assert str(e.value).startswith("[Errno ") and "OUTPUT_DIR /sys/kernel/spcl_test_out cannot be" in str(e.value)
    assert str(e.value).endswith("give a folder you can write to")


def test_unknown_key_suggests_the_real_one(tmp_path):
    proc = run_tool("train.py", "--config", TOY, "OUTPUT_DIR", str(tmp_path), "ALIGN.BASE_LRR", "0.1")
    _one_line_error(proc, "ALIGN.BASE_LRR", "did you mean 'ALIGN.BASE_LR'")


def test_flag_after_the_overrides(tmp_path):
    proc = run_tool("train.py", "--config", TOY, "OUTPUT_DIR", str(tmp_path), "--stage", "align")
    _one_line_error(proc, "--stage", "put every flag first")


@pytest.mark.parametrize("tool, args", [
    ("test", ["--config", TOY, "SEED", "1", "--checkpoint", "m.pth"]),
    ("infer", ["--checkpoint", "m.pth", "SEED", "1", "--input", "photos"]),
    ("gen_pseudo", ["--checkpoint", "m.pth", "SEED", "1", "--output=out"]),
    ("train", ["SEED", "1", "--config", TOY]),
])
def test_a_required_flag_after_the_overrides_is_named_not_called_missing(tool, args):
    """argparse stopped first, with its usage block and 'the following arguments are required: --checkpoint'
    for a --checkpoint that was given."""
    late = next(a for a in args[args.index("SEED"):] if a.startswith("--")).split("=")[0]
    with pytest.raises(ValueError, match=f"^flag {late} comes after the KEY VALUE overrides; put every flag first") \
            as error:
        load_tool(tool).main(args)
    assert type(error.value).__name__ == "UsageError"  # run_main prints it as one line, exit 2


def test_debug_shows_the_traceback(tmp_path):
    proc = run_tool("train.py", "--debug", "--config", str(tmp_path / "nope.yaml"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_config_is_required_and_stages_are_listed():
    proc = run_tool("train.py")
    assert proc.returncode == 2 and "--config" in proc.stderr
    help_text = run_tool("train.py", "--help").stdout
    for needle in ("Resume", "Start afresh", "--allow-config-change", "source_only", "adv_warmup", "prototypes",
                   "pseudo_labels", "align", "self_train"):
        assert needle in help_text, needle


def test_stage_folder_or_prototypes_given_as_checkpoint(tmp_path):
    stage = tmp_path / "3_align"
    (stage / "checkpoints").mkdir(parents=True)
    (stage / "checkpoints" / "model_final.pth").write_bytes(b"x")
    proc = run_tool("test.py", "--checkpoint", str(stage), "MODEL.BACKBONE", "resnet18")
    _one_line_error(proc, "stage folder", "did you mean")
    protos = tmp_path / "prototypes.pth"
    import torch
    torch.save({"prototypes": torch.zeros(19, 4)}, protos)
    _one_line_error(run_tool("test.py", "--checkpoint", str(protos)), "holds class prototypes")


def test_ctrl_c_says_what_the_rerun_does(capsys):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from _common import RESUMES_RUN, run_main

    def interrupted(argv):
        raise KeyboardInterrupt("at iteration 12 of stage align")

    for hint, says in ((RESUMES_RUN, "rerun the same command to resume (finished stages are skipped"),
                       (None, "rerun the same command to start it again (this tool does not resume)")):
        with pytest.raises(SystemExit) as info:
            run_main(interrupted, [], **({"on_interrupt": hint} if hint else {}))
        assert info.value.code == 130
        err = capsys.readouterr().err
        assert "interrupted at iteration 12 of stage align" in err and says in err


@pytest.mark.parametrize("tool, hint", [("train", "RESUMES_RUN"), ("gen_pseudo", "RESUMES_PASS"), ("test", None),
                                        ("infer", None), ("analyze", None), ("check_data", None)])
def test_only_the_tools_that_resume_promise_it(tool, hint, monkeypatch):
    """test.py, infer.py and analyze.py redo everything on a rerun: their Ctrl-C line must not promise a resume."""
    import runpy

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import _common

    seen = []
    monkeypatch.setattr(_common, "run_main", lambda main, argv=None, on_interrupt=_common.STARTS_OVER:
                        seen.append(on_interrupt))
    runpy.run_path(os.path.join(ROOT, "tools", f"{tool}.py"), run_name="__main__")
    assert seen == [getattr(_common, hint) if hint else _common.STARTS_OVER]


def test_out_of_gpu_memory_in_a_tool_is_one_line(capsys):
    """PyTorch's CUDA OOM outside a stage (test.py, infer.py, analyze.py): its first line and what to
    lower; a stage's own OutOfMemory keeps its message (where it stopped, what to change)."""
    import torch

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from _common import run_main
    from spcl.engine.trainer import OutOfMemory

    def oom(argv):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB.\nGPU 0 has a total …")

    with pytest.raises(SystemExit) as info:
        run_main(oom, [])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: out of GPU memory: CUDA out of memory. Tried to allocate 3.00 GiB. Lower the batch " \
           "(TEST.BATCH_SIZE, --batch-size) or use SOLVER.AMP bf16\n" in err and "GPU 0 has" not in err

    def stage_oom(argv):
        raise OutOfMemory("out of GPU memory at iteration 7 of stage align (…): …")

    with pytest.raises(SystemExit):
        run_main(stage_oom, [])
    assert "error: out of GPU memory at iteration 7 of stage align" in capsys.readouterr().err


def test_a_diverged_stage_is_one_line(capsys):
    """A stage whose loss or weights went non-finite (DivergenceError, a RuntimeError) is the user's to fix (a lower
    learning rate, SOLVER.AMP): one line and exit 2, not a traceback."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from _common import run_main
    from spcl.engine.trainer import DivergenceError

    def diverged(argv):
        raise DivergenceError("non-finite loss at iteration 3 of stage align")

    with pytest.raises(SystemExit) as info:
        run_main(diverged, [])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[0].endswith(": error: non-finite loss at iteration 3 of stage align"), err


GLOO_PEER_GONE = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by "
                  "peer [127.0.0.1]:50833. This is typically caused by a remote worker crashing. Check the logs of "
                  "the remote worker before reporting an error.")


@pytest.fixture
def under_torchrun(monkeypatch, tmp_path):
    """The environment torchrun gives process 1 of 2; returns the path of its error file."""
    error_file = str(tmp_path / "error.json")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", error_file)
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    return error_file


def _torchrun_report(error_file: str) -> str:
    """What torchrun's closing report shows for a process that exited 2 with this error file (its own reader)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    failure = ProcessFailure(local_rank=1, pid=1, exitcode=2, error_file=error_file)
    return ChildFailedError("train.py", {1: failure}).format_msg()


def test_under_torchrun_an_error_names_its_process_and_reaches_torchruns_report(under_torchrun, capsys):
    from _common import run_main

    def missing(argv):
        raise FileNotFoundError("image not found: data/x.png")

    with pytest.raises(SystemExit) as info:
        run_main(missing, [])
    assert info.value.code == 2
    assert "error (process 1 of 2): image not found: data/x.png\n" in capsys.readouterr().err
    report = _torchrun_report(under_torchrun)
    assert "traceback : spcl: error (process 1 of 2): image not found: data/x.png" in report.replace(
        os.path.basename(sys.argv[0]) or "spcl", "spcl"), report


def test_the_error_file_has_the_layout_of_torchruns_own_so_its_report_dates_the_error(under_torchrun):
    """{"message": {"message", "extraInfo": {"py_callstack", "timestamp"}}}, as torch.distributed.elastic's
    ErrorHandler writes it: with the record at the top level torchrun reads the timestamp as 0 (1970)."""
    import time

    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from _common import tell_torchrun

    before = int(time.time())
    tell_torchrun("spcl: error (process 1 of 2): image not found")
    failure = ProcessFailure(local_rank=1, pid=1, exitcode=2, error_file=under_torchrun)
    assert before <= failure.timestamp <= int(time.time())
    assert failure.message["extraInfo"]["py_callstack"] == "spcl: error (process 1 of 2): image not found"


def test_a_process_that_lost_a_peer_says_so_in_one_line_and_leaves_the_report_to_the_peer(under_torchrun, capsys):
    from _common import run_main

    def peer_gone(argv):
        raise RuntimeError(GLOO_PEER_GONE)

    with pytest.raises(SystemExit) as info:
        run_main(peer_gone, [])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "process 1 of 2 stopped because another process of the run failed or was killed (Connection closed " \
           "by peer [127.0.0.1]:50833)" in err
    assert not os.path.exists(under_torchrun)  # the report's root cause stays the process that failed first
    with pytest.raises(RuntimeError, match="Connection closed by peer"):
        run_main(peer_gone, ["--debug"])


def test_a_collective_that_lost_its_peer_is_known_by_its_type_or_its_text_and_only_as_a_runtime_error(
        under_torchrun, capsys):
    """lost_a_peer: torch's DistNetworkError says so whatever its text; another error is a bug of this process
    even when its text mentions a peer (an AssertionError about a broken pipe), and keeps its traceback."""
    import torch.distributed as dist

    from _common import run_main

    def store_gone(argv):
        raise dist.DistNetworkError("failed to recv, got 0 bytes")

    with pytest.raises(SystemExit) as info:
        run_main(store_gone, [])
    assert info.value.code == 1
    assert "process 1 of 2 stopped because another process of the run failed or was killed (failed to recv, got 0 " \
           "bytes)" in capsys.readouterr().err

    def own_bug(argv):
        raise AssertionError("Broken pipe expected in the writer's state")

    with pytest.raises(AssertionError, match="Broken pipe expected"):
        run_main(own_bug, [])


def test_the_same_error_in_a_single_process_is_a_bug_and_keeps_its_traceback(monkeypatch):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from _common import run_main

    monkeypatch.delenv("WORLD_SIZE", raising=False)

    def peer_gone(argv):
        raise RuntimeError(GLOO_PEER_GONE)

    with pytest.raises(RuntimeError, match="Connection closed by peer"):
        run_main(peer_gone, [])


def test_an_unexpected_error_under_torchrun_reaches_its_report_with_the_traceback(under_torchrun):
    from _common import run_main

    def bug(argv):
        return 1 // 0

    with pytest.raises(ZeroDivisionError):
        run_main(bug, [])
    report = _torchrun_report(under_torchrun)
    assert "process 1 of 2 failed:" in report and "ZeroDivisionError" in report and "1 // 0" in report, report


PEER_SCRIPT = '''
import os, signal, sys
sys.path.insert(0, {tools!r})
import torch.distributed as dist
from _common import run_main

def main(argv):
    dist.init_process_group("gloo")
    if dist.get_rank() == 0:
        raise FileNotFoundError("image not found: data/x.png")
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # reach the collective's error before torchrun stops us
    dist.barrier()

run_main(main)
'''


def test_torchrun_shows_the_failing_processs_error_and_no_traceback_from_the_others(tmp_path):
    """Two real processes under torchrun (gloo): process 0 fails with a user error while process 1 waits in a
    collective. The output holds process 0's line, process 1's one-line note, and torchrun's report
    naming process 0's error; no traceback from process 1."""
    import shutil
    import socket

    try:
        import torch.distributed.run  # noqa: F401
    except ImportError:
        pytest.skip("torch.distributed.run (torchrun) is not available in this torch build")
    script = tmp_path / "peer.py"
    script.write_text(PEER_SCRIPT.format(tools=os.path.join(ROOT, "tools")))
    exe = shutil.which("torchrun")
    launcher = [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([*launcher, "--nproc_per_node=2", f"--master_port={port}", str(script)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "peer.py: error (process 0 of 2): image not found: data/x.png" in out, out
    assert "peer.py: process 1 of 2 stopped because another process of the run failed or was killed (Connection" \
        in out, out
    assert "Traceback" not in out.split("ChildFailedError")[0].replace("Traceback (most recent call last):\n  File "
                                                                        f"\"{exe}\"", ""), out
    root_cause = out.split("Root Cause")[-1]
    assert "traceback : peer.py: error (process 0 of 2): image not found: data/x.png" in root_cause, out


def test_overrides_end_a_flag_of_several_values(tmp_path, monkeypatch):
    """`--scales 0.75 1.25 KEY VALUE`: the first config key ends --scales (argparse alone hands the overrides to
    it, "invalid float value"); a value that is no key (a label, a file named like a key) stays a value."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from _common import config_parser

    parser = config_parser("A tool.")
    parser.add_argument("--scales", type=float, nargs="+")
    parser.add_argument("--names", nargs="+")
    parser.add_argument("--output")
    parser.add_argument("--size", nargs=2)
    parser.add_argument("--flip", action="store_true")
    # the value of a flag of one value (or a fixed number) is never a key, whatever it looks like
    args = parser.parse_args(["--output", "EVAL.V2", "--size", "SEED", "OUTPUT_DIR", "--flip", "SEED", "3"])
    assert (args.output, args.size, args.flip) == ("EVAL.V2", ["SEED", "OUTPUT_DIR"], True)
    assert args.opts[-2:] == ["SEED", "3"]
    args = parser.parse_args(["--scales", "0.75", "1.25", "DATASETS.TEST_LIST", "x.txt", "SEED", "3"])
    assert args.scales == [0.75, 1.25] and args.opts[-4:] == ["DATASETS.TEST_LIST", "x.txt", "SEED", "3"]
    args = parser.parse_args(["--names", "SPCL", "FADA", "SEED", "3"])
    assert args.names == ["SPCL", "FADA"] and args.opts[-2:] == ["SEED", "3"]
    args = parser.parse_args(["--scales", "1", "--", "SEED", "3"])  # the user's own "--" is kept as it is
    assert args.scales == [1.0] and args.opts == ["--", "SEED", "3"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "SEED").write_text("")  # a file of that name is a value
    args = parser.parse_args(["--names", "SEED", "OUTPUT_DIR", "o"])
    assert args.names == ["SEED"] and args.opts[-2:] == ["OUTPUT_DIR", "o"]


def test_a_run_folder_is_known_by_any_stage_folder_that_holds_a_record(tmp_path):
    """refuse_a_run_folder: a run's stage folders are `<i>_<stage>` for any index (the tenth stage is
    10_self_train) holding manifest.json or upstream.json; a folder of that name without a record, or one a
    rerun set aside (`<i>_<stage>.stale-<time>`), does not make its parent a run folder."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import re

    from _common import refuse_a_run_folder

    run = tmp_path / "run"
    (run / "3_align").mkdir(parents=True)  # no record: not a stage folder
    (run / "4_self_train.stale-20260101-000000").mkdir()
    (run / "4_self_train.stale-20260101-000000" / "manifest.json").write_text("{}")
    refuse_a_run_folder(str(run), "--output")
    refuse_a_run_folder(str(tmp_path / "new"), "--output")  # not there yet
    (run / "10_self_train").mkdir()
    (run / "10_self_train" / "upstream.json").write_text("{}")
    with pytest.raises(ValueError, match=f"^--output {re.escape(str(run))} is the folder of a pipeline run "
                                         r"\(it holds its stage folder 10_self_train\)"):
        refuse_a_run_folder(str(run), "--output")
    stage = re.escape(str(run / "10_self_train"))
    with pytest.raises(ValueError, match=f"^--output {stage} is a stage folder of a pipeline run "
                                         r"\(it holds upstream.json\)"):
        refuse_a_run_folder(str(run / "10_self_train"), "--output")


def test_a_key_of_three_levels_ends_a_flag_of_several_values():
    """DATASETS.TOY.GENERATE (a sub-section's key) is a config key as DATASETS.DATA_DIR is: it ends --scales
    instead of being read as a scale."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from _common import config_parser, is_override_key

    assert is_override_key("DATASETS.TOY.GENERATE") and not is_override_key("DATASETS.TOY.")
    assert is_override_key("SEED") and not is_override_key("DATASETS")  # a section alone is no key
    parser = config_parser("A tool.")
    parser.add_argument("--scales", type=float, nargs="+")
    args = parser.parse_args(["--scales", "0.5", "DATASETS.TOY.GENERATE", "False"])
    assert args.scales == [0.5] and args.opts == ["--", "DATASETS.TOY.GENERATE", "False"]


def test_test_py_reads_the_overrides_after_scales(tmp_path):
    proc = run_tool("test.py", "--config", TOY, "--checkpoint", str(tmp_path / "m.pth"), "--scales", "0.75", "1.25",
                "DATASETS.TEST_LIST", str(tmp_path / "nowhere.txt"))
    _one_line_error(proc, "m.pth")  # the checkpoint is what is missing: the overrides parsed
    assert "invalid float value" not in proc.stderr


@pytest.mark.parametrize("tool, value", [("test", "nan"), ("test", "inf"), ("test", "0"), ("test", "-1"),
                                         ("test", "x"), ("infer", "nan")])
def test_scales_that_are_not_positive_factors_are_refused_naming_the_flag(tool, value, capsys):
    given = ["--input", "x"] if tool == "infer" else []
    with pytest.raises(SystemExit) as info:  # argparse's exit: usage and one error line
        load_tool(tool).main(["--config", TOY, "--checkpoint", "none.pth", *given, "--scales", "1", value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert f"argument --scales: invalid scale_factor value: '{value}'" in err or \
        f"argument --scales: '{value}' is not a positive factor of INPUT.TEST_SIZE" in err, err
