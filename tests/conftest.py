"""Shared test fixtures: one thread per process (tests run beside each other and spawn processes;
an oversubscribed OpenMP pool is many times slower), a small generated dataset, and tiny configs."""
from __future__ import annotations

import contextlib
import os
import struct
import sys
import zlib

import numpy as np

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # `from benchmarks.reference import …`: the one reference of the released rules
    sys.path.insert(0, REPO)

torch.set_num_threads(int(os.environ.get("SPCL_TEST_THREADS", "1")))
SHARED_FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                               "fixtures")


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """A tiny generated dataset (GTA5 + Cityscapes layouts): 8 source, 8 target train, 4 val, 64x32."""
    from spcl.toy import generate_toy_dataset

    root = tmp_path_factory.mktemp("toy")
    generate_toy_dataset(root, seed=0, num_source=8, num_target_train=8, num_target_val=4, size=(64, 32))
    return str(root)


def tiny_cfg(toy_root: str, output_dir: str, *opts):
    """A frozen config running every stage for a few iterations on the tiny dataset."""
    from spcl.config import load_config

    base = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "toy.yaml")
    return load_config(base, tiny_opts(toy_root, output_dir) + list(opts))


def tiny_opts(toy_root: str, output_dir: str) -> list:
    """The KEY VALUE overrides of `tiny_cfg` over configs/toy.yaml (for a tool's command line)."""
    return [
        "OUTPUT_DIR", output_dir, "DATASETS.DATA_DIR", toy_root, "DATASETS.TOY.GENERATE", "False",
        "INPUT.SOURCE_SIZE", "[64, 32]", "INPUT.TARGET_SIZE", "[64, 32]", "INPUT.TEST_SIZE", "[64, 32]",
        "INPUT.SELF_TRAIN_BASE_SIZE", "[64, 32]", "INPUT.SELF_TRAIN_CROP", "[48, 24]",
        "ADV_WARMUP.STOP_ITER", "3", "ALIGN.STOP_ITER", "3", "SELF_TRAIN.STOP_ITER", "3",
        "SOURCE_ONLY.STOP_ITER", "3", "ADV_WARMUP.SOURCE_BATCH", "2", "ADV_WARMUP.TARGET_BATCH", "2",
        "ALIGN.SOURCE_BATCH", "2", "ALIGN.TARGET_BATCH", "2", "SELF_TRAIN.TARGET_BATCH", "2",
        "SOURCE_ONLY.SOURCE_BATCH", "2", "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.LOG_PERIOD", "1",
    ]


@pytest.fixture(scope="module")
def prototypes(tmp_path_factory):
    """A K×C prototype file (unit rows, 19 × 512: the toy's ResNet-18) for the align stage."""
    path = str(tmp_path_factory.mktemp("protos") / "p.pth")
    g = torch.Generator().manual_seed(0)
    torch.save({"prototypes": torch.nn.functional.normalize(torch.randn(19, 512, generator=g), dim=1)}, path)
    return path


@pytest.fixture(scope="module")
def pseudo_dir(toy_root, tmp_path_factory):
    """Pseudo labels for the tiny toy's target train images = their ground truth in trainIds (enough
    for a stage step)."""
    from spcl.data import build_dataset
    from spcl.data.io import write_label_png

    out = tmp_path_factory.mktemp("pseudo")
    ds = build_dataset(tiny_cfg(toy_root, str(out)), "cityscapes_train", train=False, labels="required")
    for i in range(len(ds)):
        item = ds[i]
        write_label_png(str(out / item["name"]), item["label"].numpy().astype(np.uint8))
    return str(out)


@pytest.fixture
def count_reads(monkeypatch):
    """The image paths spcl.data.check.check_item is called with (one per item the data check actually reads)."""
    import spcl.data.check as C

    calls = []
    real = C.check_item

    def counting(dataset, image_path, label_path):
        calls.append(image_path)
        return real(dataset, image_path, label_path)

    monkeypatch.setattr(C, "check_item", counting)
    return calls


def tb_scalars(folder):
    """{tag: [values]} of the TensorBoard events in `folder`, its event files read in the order they were made.
    TensorBoard reads them in name order, `events.out.tfevents.<second>.<host>.<pid>.<counter>`, the pid and
    the per-process counter compared as text: two writers of one process in one second (a test's killed
    attempt and its rerun) with counters 9 and 10 are read rerun first, and the killed attempt's older steps
    then purge the rerun's. Read from copies whose pid and counter are zero-padded."""
    import shutil
    import tempfile

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tempfile.TemporaryDirectory() as ordered:
        for name in os.listdir(folder):
            parts = name.split(".")
            if name.startswith("events.out.tfevents.") and len(parts) >= 7 and parts[-1].isdigit() \
                    and parts[-2].isdigit():
                parts[-2], parts[-1] = f"{int(parts[-2]):010d}", f"{int(parts[-1]):010d}"
            shutil.copy(os.path.join(folder, name), os.path.join(ordered, ".".join(parts)))
        acc = EventAccumulator(ordered, size_guidance={"scalars": 0})
        acc.Reload()
        return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def load_tool(name: str):
    """tools/<name>.py imported as a module (the tools are scripts, not a package)."""
    import importlib.util

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(f"spcl_tools_{name}_cli", os.path.join(repo, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def hide_gpu():
    """Inside the block the code under test sees no GPU (torch.cuda.is_available() is False, so
    default_device() is the CPU). For tests that assert bit-equality between two computations, which
    only the CPU guarantees: on a GPU, cuDNN's choice of algorithm and the atomic adds of bilinear
    upsampling's backward make two identical runs differ in the last bits (a tie between two logits
    can then flip a pixel). A no-op where no GPU is present, as in CI."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.cuda, "is_available", lambda: False)
        yield


@pytest.fixture(scope="module")
def on_the_cpu():
    """A module's tests (and its module-scoped fixtures) run on the CPU: see hide_gpu. Use as
    `pytestmark = pytest.mark.usefixtures("on_the_cpu")`."""
    with hide_gpu():
        yield


@contextlib.contextmanager
def restored_spcl_logger():
    """Puts the `spcl` logger's handlers, propagation and level back as they were (a tool's
    setup_logger changes them), closing the handlers added meanwhile."""
    import logging

    logger = logging.getLogger("spcl")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    try:
        yield
    finally:
        for h in list(logger.handlers):
            if h not in handlers:
                logger.removeHandler(h)
                h.close()
        logger.handlers[:] = handlers
        logger.propagate, logger.level = propagate, level


def run_tool(script: str, *args: str, cwd: str = REPO):
    """`python tools/<script> ARGS` run inside this process, as its `__main__` block runs it (`runpy`, with
    sys.argv and the current directory set): exit code, stdout and stderr as a `subprocess.CompletedProcess`.
    What a user sees (one-line errors, exit codes, --help) without the 5–6 s a fresh process spends
    importing torch and torchvision. An exception that escapes the tool is printed as Python would (its
    traceback, exit 1). A test that needs the process itself (signals, torchrun) starts a real one."""
    import io
    import logging
    import runpy
    import subprocess
    import traceback

    path = os.path.join(REPO, "tools", script)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with restored_spcl_logger(), pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        logging.getLogger("spcl").handlers[:] = []  # the tool's console handler writes to `out`, as in a process
        mp.setattr(sys, "argv", [path, *args])
        mp.setattr(sys, "path", list(sys.path))  # each tool puts tools/ in front again
        mp.chdir(cwd)
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if e.code is not None and not isinstance(e.code, int):
                print(e.code, file=err)  # sys.exit("message"): Python prints it
        except BaseException:  # noqa: BLE001 - an uncaught error: Python prints its traceback and exits 1
            err.write(traceback.format_exc())
            code = 1
    return subprocess.CompletedProcess([sys.executable, path, *args], code, out.getvalue(), err.getvalue())


@pytest.fixture
def spcl_log():
    """Text logged to the `spcl` logger during the test (which does not propagate to the root logger
    once a run has set it up, so pytest's caplog cannot see it)."""
    import io
    import logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("spcl")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    class Text:
        @property
        def text(self):
            return stream.getvalue()

    yield Text()
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture
def shared_fixtures():
    """The real files of ../shared/fixtures (skips when the folder is absent)."""
    path = os.path.abspath(SHARED_FIXTURES)
    if not os.path.isdir(path):
        pytest.skip("../shared/fixtures is not present")
    return path


def write_png16(path: str, array: np.ndarray) -> None:
    """Write an H×W×3 (or H×W) uint16 array as a 16-bit PNG (Pillow cannot write 16-bit RGB).

    Test data only: SYNTHIA-style label files (the library reads them, never writes them).
    """
    arr = np.asarray(array, dtype=np.uint16)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w, c = arr.shape
    color_type = {1: 0, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + arr[i].astype(">u2").tobytes() for i in range(h))

    def chunk(tag: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(tag + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", crc)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(png)


@pytest.fixture(scope="session")
def random_checkpoint(toy_root, tmp_path_factory):
    """A checkpoint of the toy segmentor at its seeded random initialisation (MODEL.WEIGHTS of the inference stages)."""
    from spcl.modeling import build_segmentor

    folder = tmp_path_factory.mktemp("random_ckpt")
    torch.manual_seed(0)
    path = folder / "model.pth"
    torch.save({"model": build_segmentor(tiny_cfg(toy_root, str(folder)), load_weights=False).state_dict(),
                "iteration": 0}, path)
    return str(path)
