"""Every stage runs 3 iterations on the tiny generated dataset and writes what it hands on; the
checkpoints hold the right state; α = 1 keeps the prototype bank fixed through `align`."""
import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_cfg
from spcl.config import get_cfg
from spcl.engine import run_stage
from spcl.evaluation import evaluate_checkpoint


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def warmup(toy_root, tmp_path_factory):
    """An adv_warmup run (3 iterations) shared by the stage tests of this module."""
    out = str(tmp_path_factory.mktemp("warmup"))
    cfg = tiny_cfg(toy_root, out)
    return cfg, run_stage(cfg, "adv_warmup", out)


def test_adv_warmup_outputs(warmup):
    cfg, result = warmup
    ckpt = _load(result["outputs"]["checkpoint"])
    assert ckpt["iteration"] == 3 and ckpt["stage"] == "adv_warmup"
    assert {"model", "discriminator", "optimizers", "rng"} <= set(ckpt)
    assert set(ckpt["optimizers"]) == {"model", "discriminator"}
    assert len(result["metrics"]["IoU"]) == 19
    # the reported mIoU is the one the inference entry point gives for the handed-on checkpoint
    again = evaluate_checkpoint(cfg, result["outputs"]["checkpoint"], torch.device("cpu"))
    assert result["metrics"]["mIoU"] == pytest.approx(again["mIoU"], abs=1e-9)
    folder = os.path.dirname(os.path.dirname(result["outputs"]["checkpoint"]))
    for name in ("config.yaml", "env.txt", "log.txt", "metrics.json"):
        assert os.path.isfile(os.path.join(folder, name)), name
    lines = [json.loads(ln) for ln in open(os.path.join(folder, "metrics.json"))]
    train = [r for r in lines if "loss_seg" in r]
    assert [r["iteration"] for r in train] == [1, 2, 3]
    assert all(r["loss_adv"] > 0 and r["loss_d"] > 0 for r in train)
    assert any("val/mIoU" in r for r in lines)
    # poly schedule: lr at iteration 2 of a 300-iteration horizon
    lr = cfg.ADV_WARMUP.BASE_LR * (1 - 2 / cfg.ADV_WARMUP.MAX_ITER) ** 0.9
    assert train[-1]["lr"] == pytest.approx(lr, rel=1e-6)
    assert train[-1]["lr_head"] == pytest.approx(cfg.SOLVER.HEAD_LR_FACTOR * lr, rel=1e-6)


def test_source_only(toy_root, tmp_path):
    cfg = tiny_cfg(toy_root, str(tmp_path))
    result = run_stage(cfg, "source_only", str(tmp_path))
    ckpt = _load(result["outputs"]["checkpoint"])
    assert ckpt["stage"] == "source_only" and "discriminator" not in ckpt


def test_prototypes_pseudo_align_self_train(toy_root, tmp_path, warmup):
    _, warm = warmup
    ckpt = warm["outputs"]["checkpoint"]
    cfg = tiny_cfg(toy_root, str(tmp_path), "MODEL.WEIGHTS", ckpt)
    protos = run_stage(cfg, "prototypes", str(tmp_path / "protos"))["outputs"]["prototypes"]
    p = _load(protos)["prototypes"]
    assert p.shape == (19, 512)
    seen = _load(protos)["counts"] > 0
    # prototypes are means of unit vectors: norm <= 1, > 0 for every class seen
    assert (p[seen].norm(dim=1) <= 1 + 1e-5).all() and (p[seen].norm(dim=1) > 0).all()
    assert (p[~seen] == 0).all()

    pseudo = run_stage(cfg, "pseudo_labels", str(tmp_path / "pseudo"))
    label_dir = pseudo["outputs"]["pseudo_dir"]
    pngs = [f for f in os.listdir(label_dir) if f.endswith(".png")]
    assert len(pngs) == 8  # one per target training image
    labels = np.stack([np.array(Image.open(os.path.join(label_dir, f))) for f in pngs])
    assert pseudo["metrics"]["kept_fraction"] == pytest.approx((labels != 255).mean(), abs=1e-9)

    for alpha, fixed in ((1.0, True), (0.1, False)):
        out = tmp_path / f"align_{alpha}"
        acfg = tiny_cfg(toy_root, str(out), "MODEL.WEIGHTS", ckpt, "PROTOTYPE.PATH", protos,
                        "DATASETS.PSEUDO_DIR", label_dir, "PROTOTYPE.ALPHA", str(alpha),
                        "LOSS.CONTRAST.TEMPERATURE", "100.0", "LOSS.CONTRAST.NORMALIZE_PROTOTYPES", "False")
        result = run_stage(acfg, "align", str(out))
        bank = _load(result["outputs"]["checkpoint"])["prototype_bank"]["prototypes"]
        assert torch.equal(bank, p) == fixed
        rows = [json.loads(ln) for ln in open(out / "metrics.json") if "loss_cl_src" in ln]
        assert all(0 < r["target_kept"] <= 1 for r in rows)
        # τ = 100: every logit q̂·p/τ is within ±0.01, so each term is ln K to within 0.02
        assert all(abs(r["loss_cl_src"] - math.log(19)) < 0.02 for r in rows)
        assert all(abs(r["loss_cl_tgt"] - math.log(19)) < 0.02 for r in rows)
        assert all((r["proto_drift"] == 0) == fixed for r in rows)

    before = _load(result["outputs"]["checkpoint"])["model"]
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats
    scfg = tiny_cfg(toy_root, str(tmp_path / "st"), "MODEL.WEIGHTS", result["outputs"]["checkpoint"],
                    "DATASETS.PSEUDO_DIR", label_dir)
    st = run_stage(scfg, "self_train", str(tmp_path / "st"))
    after = _load(st["outputs"]["checkpoint"])["model"]
    # self-training trains BatchNorm: every layer's running statistics moved
    assert all(not torch.equal(before[k], after[k]) for k in stats)


def test_align_ablation_switches_and_online_mask(toy_root, tmp_path, warmup):
    _, warm = warmup
    ckpt = warm["outputs"]["checkpoint"]
    protos = str(tmp_path / "p.pth")
    torch.save({"prototypes": torch.nn.functional.normalize(torch.randn(19, 512), dim=1)}, protos)
    cfg = tiny_cfg(toy_root, str(tmp_path / "a"), "MODEL.WEIGHTS", ckpt, "PROTOTYPE.PATH", protos,
                   "ALIGN.TARGET_MASK", "online", "LOSS.CONTRAST.SOURCE", "False")
    run_stage(cfg, "align", str(tmp_path / "a"))
    rows = [json.loads(ln) for ln in open(tmp_path / "a" / "metrics.json") if "loss_seg" in ln]
    assert all("loss_cl_src" not in r and "loss_cl_tgt" in r for r in rows)
    cfg = tiny_cfg(toy_root, str(tmp_path / "b"), "MODEL.WEIGHTS", ckpt, "PROTOTYPE.PATH", protos,
                   "LOSS.CONTRAST.TARGET", "False")
    run_stage(cfg, "align", str(tmp_path / "b"))  # no pseudo labels needed without the target term
    rows = [json.loads(ln) for ln in open(tmp_path / "b" / "metrics.json") if "loss_seg" in ln]
    assert all("loss_cl_tgt" not in r and "loss_cl_src" in r for r in rows)


def test_align_without_prototype_file_names_the_key(toy_root, tmp_path):
    cfg = tiny_cfg(toy_root, str(tmp_path), "PROTOTYPE.PATH", str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="PROTOTYPE.PATH"):
        run_stage(cfg, "align", str(tmp_path))


def test_best_handoff_is_marked_as_oracle(toy_root, tmp_path):
    cfg = tiny_cfg(toy_root, str(tmp_path), "PIPELINE.HANDOFF", "best", "SOLVER.EVAL_PERIOD", "1")
    result = run_stage(cfg, "source_only", str(tmp_path))
    assert result["oracle"] is True and "ORACLE" in result["handoff"]
    assert os.path.isfile(result["outputs"]["checkpoint"])
    assert result["outputs"]["checkpoint"].endswith("model_best.pth")
    # the stage reports what it hands on: the best evaluation's metrics, and the last one's beside them
    with open(os.path.join(str(tmp_path), "metrics.json")) as f:
        evals = [r for r in map(json.loads, f) if "val/mIoU" in r]
    best = max(evals, key=lambda r: r["val/mIoU"])
    assert len(evals) == 3 and result["metrics"]["mIoU"] == best["val/mIoU"] == max(r["val/mIoU"] for r in evals)
    assert result["last_metrics"]["mIoU"] == evals[-1]["val/mIoU"]
    assert f"iteration {best['iteration']}," in result["handoff"]
    # the file itself says it is an oracle choice, and of which stage (tools/convert_checkpoint.py carries it on)
    saved = _load(result["outputs"]["checkpoint"])
    assert (saved["oracle"], saved["stage"], saved["iteration"]) == (True, "source_only", best["iteration"])
    assert saved["metrics"]["mIoU"] == best["val/mIoU"]


def test_best_handoff_survives_a_resume(tmp_path):
    """A resumed stage keeps the best its folder already holds: evaluations 5, 9, 7, then a restart and
    6, 8 hand on the checkpoint of the 9 (the restart used to start from -inf and keep the 8)."""
    from spcl.engine.pipeline import KeepBestCheckpoint
    from spcl.utils.io import atomic_torch_save

    class Saver:
        folder = str(tmp_path)

        def save(self, name, iteration, extra, periodic, pointer):
            path = os.path.join(self.folder, name + ".pth")
            atomic_torch_save({"iteration": iteration, "weights": torch.full((2,), float(iteration)), **extra}, path)
            return path

    class Trainer:
        NAME, checkpointer, cfg = "align", Saver(), get_cfg()

    hook = KeepBestCheckpoint(str(tmp_path))
    for it, miou in ((2, 5.0), (4, 9.0), (6, 7.0)):
        hook.after_evaluation(Trainer, it, {"mIoU": miou, "IoU": [miou]})
    resumed = KeepBestCheckpoint(str(tmp_path))
    for it, miou in ((8, 6.0), (10, 8.0)):
        resumed.after_evaluation(Trainer, it, {"mIoU": miou, "IoU": [miou]})
    saved = torch.load(resumed.path, weights_only=False)
    assert (resumed.iteration, resumed.mIoU, saved["iteration"]) == (4, 9.0, 4) and resumed.metrics["IoU"] == [9.0]
    assert saved["config"] == Trainer.cfg.dump()  # like every stage checkpoint (convert_checkpoint --print-config)
    assert "iteration 4, mIoU 9.00" in resumed.describe()
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "model_best.pth").write_bytes(b"cut short")
    assert KeepBestCheckpoint(str(torn)).mIoU == -math.inf  # unreadable: chosen anew, not a crash at the start


class _StandIn:
    """A stage for run_stage: a training stage (checkpointer, hooks, resume_from) whose run evaluates to the
    mIoUs of EVALS, or, with TRAINING False, an offline stage (none of these)."""
    TRAINING, EVALS, NAME = True, (), "source_only"

    def __init__(self, cfg, folder, device):
        from spcl.engine.checkpoint import Checkpointer

        self.cfg = cfg
        if self.TRAINING:
            self.checkpointer, self.hooks = Checkpointer(os.path.join(folder, "checkpoints"), {}, {}), []
            self.resume_from = (self.checkpointer.candidates() or [None])[0]

    def run(self):
        for i, miou in enumerate(self.EVALS):
            for hook in self.hooks:
                hook.after_evaluation(self, 10 * (i + 1), {"mIoU": miou, "IoU": [miou]})
        return {"outputs": {"checkpoint": "final.pth"}, "metrics": {"mIoU": self.EVALS[-1] if self.EVALS else 0.0}}


@pytest.mark.parametrize("resume, handed", [(False, 50.0), (True, 90.0)], ids=["anew", "resumed"])
def test_best_handoff_starts_from_the_folders_best_only_when_the_stage_resumes(tmp_path, monkeypatch, resume, handed):
    """A model_best.pth in the folder (mIoU 90) is the best so far for a stage that resumes from a checkpoint
    of its own; a stage that starts from iteration 0 there (no checkpoint to resume: a run that stopped
    after its best save) chooses among its own evaluations (50, 40)."""
    from spcl.engine import pipeline
    from spcl.engine.checkpoint import Checkpointer

    folder = str(tmp_path)
    Checkpointer(os.path.join(folder, "checkpoints"), {}, {}).save(
        "model_best", 4, {"metrics": {"mIoU": 90.0, "IoU": [90.0]}}, periodic=False, pointer=False)
    if resume:
        Checkpointer(os.path.join(folder, "checkpoints"), {}, {}).save("model_0000004", 4)
    monkeypatch.setitem(pipeline.STAGES, "source_only", type("Trainer", (_StandIn,), {"EVALS": (50.0, 40.0)}))
    cfg = tiny_cfg(folder, folder, "PIPELINE.HANDOFF", "best")
    result = pipeline.run_stage(cfg, "source_only", folder, torch.device("cpu"))
    assert result["oracle"] is True and result["metrics"]["mIoU"] == handed and result["last_metrics"]["mIoU"] == 40.0
    assert result["outputs"]["checkpoint"] == os.path.join(folder, "checkpoints", "model_best.pth")
    assert _load(result["outputs"]["checkpoint"])["metrics"]["mIoU"] == handed


@pytest.mark.parametrize("stage, training", [("prototypes", False), ("source_only", True)])
def test_best_handoff_leaves_a_stage_without_evaluations_as_it_is(tmp_path, monkeypatch, stage, training):
    """PIPELINE.HANDOFF best chooses among a training stage's evaluated checkpoints; an offline stage (no
    checkpoints) or a training stage that evaluated nothing hands on what it made, unmarked."""
    from spcl.engine import pipeline

    monkeypatch.setitem(pipeline.STAGES, stage, type("Stage", (_StandIn,), {"TRAINING": training}))
    cfg = tiny_cfg(str(tmp_path), str(tmp_path), "PIPELINE.HANDOFF", "best")
    assert pipeline.run_stage(cfg, stage, str(tmp_path), torch.device("cpu")) == {
        "outputs": {"checkpoint": "final.pth"}, "metrics": {"mIoU": 0.0}}


def test_an_unknown_stage_is_named_with_the_known_ones(tmp_path):
    with pytest.raises(KeyError, match=r"unknown stage 'warmup'; expected one of \(.*'adv_warmup'"):
        run_stage(tiny_cfg(str(tmp_path), str(tmp_path)), "warmup", str(tmp_path))


def test_best_handoff_keeps_the_first_of_equal_scores_and_chooses_anew_over_a_file_without_metrics(tmp_path):
    """Only a higher target-val mIoU replaces the best (a tie keeps the earlier checkpoint, as a strict `>`
    over the evaluations in order does); a model_best.pth from before the metrics were recorded is no
    starting point: the choice starts from nothing, not from a crash."""
    from spcl.engine.pipeline import KeepBestCheckpoint

    saves = []

    class Saver:
        def save(self, name, iteration, extra, periodic, pointer):
            saves.append((name, iteration, periodic, pointer))
            return os.path.join(str(tmp_path), name + ".pth")

    class Trainer:
        NAME, checkpointer, cfg = "align", Saver(), get_cfg()

    old = tmp_path / "old"
    old.mkdir()
    torch.save({"iteration": 7, "model": {}}, str(old / "model_best.pth"))  # no "metrics" record
    hook = KeepBestCheckpoint(str(old))
    assert (hook.mIoU, hook.iteration, hook.path, hook.metrics) == (-math.inf, None, None, None)
    for it, miou in ((2, 5.0), (4, 5.0), (6, 4.0)):
        hook.after_evaluation(Trainer, it, {"mIoU": miou, "IoU": [miou]})
    assert (hook.iteration, hook.mIoU) == (2, 5.0)
    # saved once, as a hand-off: neither a periodic checkpoint (pruned with them) nor the resume pointer's target
    assert saves == [("model_best", 2, False, False)]


def test_evaluation_with_target_bn_statistics_reads_the_named_images_without_labels(warmup, monkeypatch):
    """evaluate_checkpoint(bn_stats_from=...) re-estimates the BatchNorm statistics on every image of
    that dataset, read without labels, before testing; the result differs from the plain evaluation
    and the checkpoint file is left as it was."""
    import spcl.evaluation.inference as inference

    cfg, result = warmup
    path = result["outputs"]["checkpoint"]
    before = open(path, "rb").read()
    seen = []
    real = inference.reestimate_running_stats

    def spy(model, batches, device):
        batches = list(batches)
        seen.extend(name for b in batches for name in b["name"])
        for b in batches:  # no label file read: the placeholder of an unlabelled test set, all ignore
            labels = b["label"] if isinstance(b["label"], list) else [b["label"]]
            assert all(bool((lab == 255).all()) for lab in labels)
        return real(model, batches, device)

    monkeypatch.setattr(inference, "reestimate_running_stats", spy)
    adapted = evaluate_checkpoint(cfg, path, torch.device("cpu"), bn_stats_from="cityscapes_train")
    plain = evaluate_checkpoint(cfg, path, torch.device("cpu"))
    assert len(seen) == len(set(seen)) == 8
    assert adapted["mIoU"] != plain["mIoU"] or adapted["aAcc"] != plain["aAcc"]
    assert open(path, "rb").read() == before


def test_prototype_num_images_is_exact_whatever_the_batch(warmup, tmp_path):
    """PROTOTYPE.NUM_IMAGES 1 uses the first source image alone, with batches of 1 as of 4 (whole batches
    used to be counted)."""
    cfg, result = warmup
    counts = []
    for batch in ("1", "4"):
        out = str(tmp_path / batch)
        stage = tiny_cfg(cfg.DATASETS.DATA_DIR, out, "MODEL.WEIGHTS", result["outputs"]["checkpoint"],
                         "PROTOTYPE.NUM_IMAGES", "1", "TEST.BATCH_SIZE", batch)
        protos = run_stage(stage, "prototypes", out)["outputs"]["prototypes"]
        counts.append(torch.load(protos, weights_only=False)["counts"])
    assert torch.equal(counts[0], counts[1]) and 0 < counts[0].sum() <= 4 * 8  # one 32×64 image at stride 8


def test_a_rerun_of_pseudo_labels_leaves_no_label_of_an_earlier_run(toy_root, tmp_path, warmup):
    """gen_pseudo.py into a folder that holds an earlier run's labels (another model, more images): the earlier
    label files go, so the folder never holds labels of two models, while the new ones are all written."""
    _, warm = warmup
    cfg = tiny_cfg(toy_root, str(tmp_path), "MODEL.WEIGHTS", warm["outputs"]["checkpoint"])
    out = tmp_path / "pseudo"
    label_dir = run_stage(cfg, "pseudo_labels", str(out))["outputs"]["pseudo_dir"]
    ours = sorted(os.listdir(label_dir))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(os.path.join(label_dir, "gone_000000_000000_leftImg8bit.png"))
    os.makedirs(os.path.join(label_dir, "sub"))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(os.path.join(label_dir, "sub", "old_leftImg8bit.png"))
    run_stage(cfg, "pseudo_labels", str(out))
    assert sorted(os.listdir(label_dir)) == sorted(ours + ["sub"]) and os.listdir(os.path.join(label_dir, "sub")) == []


def test_pseudo_labels_read_the_target_list_when_the_target_is_also_the_test_set(toy_root, tmp_path, warmup):
    """The stage reads the target with test transforms; with DATASETS.TEST the same set it took TEST_LIST."""
    from spcl.data import build_dataset

    _, warm = warmup
    split = os.path.join(toy_root, "cityscapes", "leftImg8bit", "train")
    names = sorted(os.path.relpath(img, split) for img, _ in
                   build_dataset(tiny_cfg(toy_root, str(tmp_path)), "cityscapes_train", train=False).items)
    lists = {}
    for role, chosen in (("TARGET", names[:3]), ("TEST", names[3:5])):
        lists[role] = str(tmp_path / f"{role.lower()}.txt")
        with open(lists[role], "w") as f:
            f.writelines(n + "\n" for n in chosen)
    cfg = tiny_cfg(toy_root, str(tmp_path), "MODEL.WEIGHTS", warm["outputs"]["checkpoint"], "DATASETS.TEST",
                   "cityscapes_train", "DATASETS.TARGET_LIST", lists["TARGET"], "DATASETS.TEST_LIST", lists["TEST"])
    label_dir = run_stage(cfg, "pseudo_labels", str(tmp_path / "pseudo"))["outputs"]["pseudo_dir"]
    assert sorted(f for f in os.listdir(label_dir) if f.endswith(".png")) == sorted(os.path.basename(n)
                                                                                   for n in names[:3])


def test_prototypes_stage_follows_init_and_source_mask_on_unaugmented_source_images(warmup, tmp_path):
    """PROTOTYPE.INIT image_mean and PROTOTYPE.SOURCE_MASK gt_and_pred (the released code's choices) reach the
    stage (docs/method.md "Prototypes", Eq. 2): with the model of MODEL.WEIGHTS in eval mode, one pass over the
    source images at INPUT.SOURCE_SIZE without augmentation (here with source jitter and flips switched on
    for training), class means of the normalised features of each image under that mask, averaged over the
    images holding the class. Recomputed image by image; the file records the two settings."""
    from spcl.data import build_dataset
    from spcl.modeling import build_segmentor
    from spcl.prototypes import normalize_pixels, source_mask

    cfg, result = warmup
    out = str(tmp_path / "protos")
    stage = tiny_cfg(cfg.DATASETS.DATA_DIR, out, "MODEL.WEIGHTS", result["outputs"]["checkpoint"],
                     "PROTOTYPE.INIT", "image_mean", "PROTOTYPE.SOURCE_MASK", "gt_and_pred",
                     "PROTOTYPE.NUM_IMAGES", "3", "INPUT.SOURCE_JITTER", "True", "INPUT.FLIP_PROB", "1.0")
    saved = _load(run_stage(stage, "prototypes", out)["outputs"]["prototypes"])
    assert (saved["init"], saved["source_mask"]) == ("image_mean", "gt_and_pred")
    model = build_segmentor(stage).eval()  # loads MODEL.WEIGHTS
    items = build_dataset(stage, stage.DATASETS.SOURCE, train=False, role="source_eval")
    sums, images, dropped = torch.zeros(19, 512, dtype=torch.float64), torch.zeros(19), 0
    with torch.no_grad():
        for i in range(3):
            item = items[i]
            assert item["image"].shape[-2:] == (32, 64)  # INPUT.SOURCE_SIZE (W, H) = (64, 32)
            out = model(item["image"][None])
            mask = source_mask(item["label"][None], out["logits"], "gt_and_pred")[0]
            dropped += int(((source_mask(item["label"][None], out["logits"], "gt")[0] != 255) & (mask == 255)).sum())
            q = normalize_pixels(out["feat"])[0].double()  # C×h×w
            for k in range(19):
                if (mask == k).any():
                    sums[k] += q[:, mask == k].mean(1)
                    images[k] += 1
    assert dropped > 0  # wrong predictions left out
    expected = sums / images.clamp_min(1)[:, None]
    assert saved["counts"].tolist() == images.tolist()
    assert torch.allclose(saved["prototypes"].double(), expected, atol=1e-5)


@pytest.mark.parametrize("soften", [True, False])
def test_adv_warmup_step_losses_and_gradients_follow_the_warm_up_rules(toy_root, tmp_path, soften):
    """docs/method.md "Warm-up": one adv_warmup step's logged losses and the gradients it steps on, against a plain
    recomputation from copies of the segmentor and discriminator: segmentor ∇(CE(logits / T) + w·BCE(D(softmax
    target), 0)) with D frozen; D ∇(0.5·BCE(D(softmax(source / T)), 0) + 0.5·BCE(D(softmax target), 1)) on
    detached maps at input resolution (the optimisers' step left out); source maps softened by T only with
    ADV_WARMUP.SOFTEN_SOURCE, as released `warmup.py` does. Gradients an earlier iteration left are
    cleared first. Trainable BatchNorm keeps the statistics of the target pass only (MODEL.BN_RUNNING_STATS
    target)."""
    import copy

    import torch.nn.functional as F

    from spcl.engine.stages import AdvWarmupTrainer

    cfg = tiny_cfg(toy_root, str(tmp_path), "ADV_WARMUP.ADV_WEIGHT", "0.5", "MODEL.FREEZE_BN", "False",
                   "ADV_WARMUP.SOFTEN_SOURCE", str(soften))
    assert cfg.ADV_WARMUP.SOFTEN_SOURCE == soften and cfg.MODEL.BN_RUNNING_STATS == "target" and not cfg.SOLVER.AMP
    trainer = AdvWarmupTrainer(cfg, None, torch.device("cpu"))
    model, disc = trainer.model_without_ddp, trainer.discriminator_without_ddp
    g = torch.Generator().manual_seed(0)
    batch = {dom: {"image": torch.randn(2, 3, 32, 64, generator=g), "label": torch.randint(0, 19, (2, 32, 64),
                                                                                          generator=g)}
             for dom in ("source", "target")}
    m, d = copy.deepcopy(model), copy.deepcopy(disc)
    target_only = copy.deepcopy(model)
    with torch.no_grad():
        target_only(batch["target"]["image"])  # the running statistics of the target pass alone

    def up(logits):
        return F.interpolate(logits, size=(32, 64), mode="bilinear", align_corners=False)

    T, w = cfg.LOSS.SOURCE_TEMPERATURE, 0.5
    bce = F.binary_cross_entropy_with_logits
    logits_s = m(batch["source"]["image"])["logits"]
    seg = F.cross_entropy(up(logits_s) / T, batch["source"]["label"])
    prob_t = F.softmax(up(m(batch["target"]["image"])["logits"]), dim=1)
    d_t = d(prob_t)
    adv = w * bce(d_t, torch.zeros_like(d_t))
    grad_m = torch.autograd.grad(seg + adv, list(m.parameters()), allow_unused=True)
    d_s = d(F.softmax(up(logits_s.detach() / (T if soften else 1.0)), dim=1))
    d_t = d(prob_t.detach())
    loss_d = 0.5 * bce(d_s, torch.zeros_like(d_s)) + 0.5 * bce(d_t, torch.ones_like(d_t))
    grad_d = torch.autograd.grad(loss_d, list(d.parameters()))

    for p in list(model.parameters()) + list(disc.parameters()):
        p.grad = torch.ones_like(p)  # an earlier iteration's
    seen = []
    trainer.step = lambda: seen.append(([p.grad for p in model.parameters()], [p.grad for p in disc.parameters()]))
    logs = trainer.run_step(batch)
    assert len(seen) == 1
    assert logs["loss_seg"] == pytest.approx(seg.item(), rel=1e-5)
    assert logs["loss_adv"] == pytest.approx(adv.item(), rel=1e-5)
    assert logs["loss_d"] == pytest.approx(loss_d.item(), rel=1e-5)
    got_m, got_d = seen[0]
    for got, want in zip(got_m, grad_m):
        assert (got is None) == (want is None)
        if want is not None:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    for got, want in zip(got_d, grad_d):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    stats = {k: v for k, v in target_only.state_dict().items() if k.endswith(("running_mean", "running_var"))}
    assert stats
    for k, v in stats.items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=1e-5, atol=1e-7)
    # D: Adam over its own parameters, betas ADV_WARMUP.DISC_BETAS, on the poly schedule from ADV_WARMUP.DISC_LR
    opt = trainer.optimizers["discriminator"]
    assert [p for group in opt.param_groups for p in group["params"]] == list(disc.parameters())
    trainer.set_learning_rates(2)
    lr = cfg.ADV_WARMUP.DISC_LR * (1 - 2 / cfg.ADV_WARMUP.MAX_ITER) ** cfg.SOLVER.LR_POWER
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["betas"] == (0.9, 0.99)
    assert opt.param_groups[0]["lr"] == pytest.approx(lr, rel=1e-9)
    loaders = trainer.build_loaders(0)
    for dom, split in (("source", "gta5/images"), ("target", "cityscapes/leftImg8bit/train")):
        files = {f for _, _, fs in os.walk(os.path.join(toy_root, split)) for f in fs}
        names = next(iter(loaders[dom]))["name"]
        assert len(names) == 2 and set(names) <= files, (dom, names)


def _probe_stage():
    """An InferenceStage whose work is to report that it ran (the shared build and `run()` around it)."""
    from spcl.engine.stages import InferenceStage

    class Probe(InferenceStage):
        NAME = "probe"

        def data_names(self):
            return [("cityscapes_train", "target")]

        def compute(self):
            return {"outputs": {}, "metrics": {"computed": True}}

    return Probe


def test_an_inference_stage_builds_seeded_on_the_device_it_is_given(toy_root, random_checkpoint, tmp_path, monkeypatch):
    """spcl/engine/stages/offline.py: `Stage(cfg, output_dir, device)` seeds with SEED, loads MODEL.WEIGHTS on
    `device` (the default device only without one), takes SOLVER.AMP's dtype, and writes nothing; without
    MODEL.WEIGHTS, or run without an output folder, it names the stage and what is missing."""
    import random

    import spcl.engine.stages.offline as offline
    from spcl.utils.env import seed_all

    Probe = _probe_stage()
    monkeypatch.setattr(offline, "default_device", lambda: torch.device("meta"))
    out = tmp_path / "out"
    cfg = tiny_cfg(toy_root, str(out), "MODEL.WEIGHTS", random_checkpoint, "SEED", "7", "SOLVER.AMP", "bf16")
    random.seed(1)
    np.random.seed(1)
    stage = Probe(cfg, str(out), torch.device("cpu"))
    drawn = (random.random(), np.random.rand(3))  # (torch's generator also drew the model's initialisation)
    seed_all(7)
    assert drawn[0] == random.random() and np.array_equal(drawn[1], np.random.rand(3))
    assert stage.device == torch.device("cpu") and next(stage.model.parameters()).device == torch.device("cpu")
    assert stage.amp_dtype is torch.bfloat16 and not out.exists()
    assert Probe(tiny_cfg(toy_root, str(out), "MODEL.WEIGHTS", random_checkpoint)).device == torch.device("meta")
    with pytest.raises(ValueError, match="^stage probe needs a trained model: set MODEL.WEIGHTS"):
        Probe(tiny_cfg(toy_root, str(out)), str(out), torch.device("cpu"))
    with pytest.raises(ValueError, match="^stage probe needs an output folder to run"):
        Probe(cfg, None, torch.device("cpu")).run()


def test_an_inference_stage_run_checks_its_data_and_records_the_config_that_made_it(toy_root, random_checkpoint,
                                                                                   tmp_path, monkeypatch):
    """`run()` checks the datasets of `data_names()` when DATASETS.PREFLIGHT (only then), makes the folder, removes
    the temp files a killed write left there, and records the config; a rerun with another config (which redoes
    everything) records the new one as config.yaml."""
    import yaml

    import spcl.engine.stages.offline as offline

    Probe = _probe_stage()
    checked = []
    monkeypatch.setattr(offline, "preflight", lambda cfg, names, cache: checked.append(names))
    out = tmp_path / "a" / "b"
    for seed, check in ((3, "True"), (4, "False")):
        cfg = tiny_cfg(toy_root, str(out), "MODEL.WEIGHTS", random_checkpoint, "SEED", str(seed),
                       "DATASETS.PREFLIGHT", check)
        stage = Probe(cfg, str(out), torch.device("cpu"))
        if seed == 4:
            (out / ".tmp_cut_short.pth").write_bytes(b"x")
        assert stage.run() == {"outputs": {}, "metrics": {"computed": True}}
        assert yaml.safe_load(open(out / "config.yaml"))["SEED"] == seed
    assert checked == [[("cityscapes_train", "target")]]
    assert not (out / ".tmp_cut_short.pth").exists()
    unused = [n for n in os.listdir(out) if n.startswith("config_unused_")]
    assert len(unused) == 1 and yaml.safe_load(open(out / unused[0]))["SEED"] == 3


def test_the_pseudo_label_stage_passes_its_settings_and_reports_the_pass(toy_root, random_checkpoint, tmp_path,
                                                                         monkeypatch, spcl_log):
    """spcl/engine/stages/pseudo_labels.py around `generate_pseudo_labels` (replaced by one returning a summary
    made by hand): the target set checked in its target role; an earlier run's labels removed, then every
    process waits, then the pass runs with the PSEUDO settings, SOLVER.AMP's dtype, a quality evaluator over
    MODEL.NUM_CLASSES and the run's resume key. The metrics, the metrics.json records (written anew by a rerun)
    and TensorBoard (the writer closed) hold the summary's; the log names each class under 10% labelled as
    itself (a class without ground truth, NaN, is no such class) with the label its kept pixels most often got
    wrongly."""
    import spcl.engine.stages.offline as offline
    import spcl.engine.stages.pseudo_labels as pseudo_labels
    from conftest import tb_scalars
    from spcl.evaluation import SemSegEvaluator
    from spcl.pseudo import ImageBatches
    from spcl.utils import comm

    nan = float("nan")
    summary = {"num_images": 8, "thresholds": [0.5, 0.25, 0.0, 0.75], "kept_fraction": 0.25,
               "kept_fraction_per_class": [0.5, 0.0, 0.0, 1.0], "labelled_fraction": 0.625,
               "quality_on_kept_pixels": {"mIoU": 41.5}, "labelled_correctly": [10.0, 9.5, nan, 2.0],
               "class_names": ["road", "wall", "sky", "car"],
               "confusion_on_kept_pixels": [[4, 0, 0, 0], [3, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 5]]}
    order, calls, checked = [], [], []

    def generate(model, loader, label_dir, *args, **kwargs):
        order.append("generate")
        calls.append((loader, label_dir, args, kwargs))
        return dict(summary)

    def synchronize():
        order.append("synchronize")
        assert not os.path.exists(os.path.join(label_dir, "old_leftImg8bit.png"))

    monkeypatch.setattr(pseudo_labels, "generate_pseudo_labels", generate)
    monkeypatch.setattr(comm, "synchronize", synchronize)
    monkeypatch.setattr(offline, "preflight", lambda cfg, names, cache: checked.append(names))
    closed = []

    class Events(pseudo_labels.EventWriter):
        def close(self, *args):  # metrics.json made durable, TensorBoard flushed
            closed.append(self.folder)
            super().close(*args)

    monkeypatch.setattr(pseudo_labels, "EventWriter", Events)
    out = tmp_path / "pseudo"
    label_dir = str(out / "labels")
    for oracle in ("", "kept"):
        os.makedirs(label_dir, exist_ok=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(os.path.join(label_dir, "old_leftImg8bit.png"))
        cfg = tiny_cfg(toy_root, str(out), "MODEL.WEIGHTS", random_checkpoint, "PSEUDO.THRESHOLD_CAP", "0.7",
                       "PSEUDO.NUM_BINS", "100", "SOLVER.AMP", "bf16", "PSEUDO.ORACLE", oracle)
        order.clear()
        result = run_stage(cfg, "pseudo_labels", str(out), torch.device("cpu"))
        assert order == ["synchronize", "generate"] and checked[-1] == [("cityscapes_train", "target")]
        loader, folder, args, kwargs = calls[-1]
        assert isinstance(loader, ImageBatches) and folder == label_dir
        assert args == (19, torch.device("cpu"), 0.7, 100)
        assert kwargs["amp_dtype"] is torch.bfloat16 and kwargs["oracle"] == oracle
        assert isinstance(kwargs["quality"], SemSegEvaluator) and kwargs["quality"].num_classes == 19
        assert kwargs["resume_key"] == offline.resume_key(cfg)
        metrics = result["metrics"]
        want = {"kept_fraction": 0.25, "thresholds": [0.5, 0.25, 0.0, 0.75], "pseudo_label_mIoU": 41.5,
                **({"oracle": "kept", "labelled_fraction": 0.625} if oracle else {})}
        assert result["outputs"]["pseudo_dir"] == label_dir
        assert {k: v for k, v in metrics.items() if k != "labelled_correctly"} == want
        assert metrics["labelled_correctly"][:2] == [10.0, 9.5] and metrics["labelled_correctly"][3] == 2.0
        assert ("wrote ground truth, not predictions" in spcl_log.text) == bool(oracle)
    assert closed == [str(out)] * 2
    rows = [json.loads(ln) for ln in open(out / "metrics.json")]
    assert [{k: v for k, v in r.items() if k != "stage"} for r in rows] == [
        {"iteration": 0, "thresholds": [0.5, 0.25, 0.0, 0.75], "kept_fraction": 0.25,
         "kept_fraction_per_class": [0.5, 0.0, 0.0, 1.0]},
        {"iteration": 0, "quality/mIoU": 41.5, "quality/labelled_correctly": [10.0, 9.5, None, 2.0]}]
    assert tb_scalars(str(out / "tb"))["pseudo_labels/quality/mIoU"] == [41.5]
    assert ("classes with under 10% of their target pixels labelled as themselves (training on these labels "
            "cannot teach them): wall 9.5% (its kept pixels most often mislabelled road: 75%), car 2.0%\n"
            in spcl_log.text)


def test_remove_earlier_labels_removes_label_pngs_and_the_thresholds_but_not_the_cache(tmp_path):
    """remove_earlier_labels: every .png below the label folder and its own thresholds.json go (counted); the
    `.cache` of interrupted predictions, other files and a thresholds.json further down stay."""
    from spcl.engine.stages.pseudo_labels import remove_earlier_labels

    files = {"a.png": True, "thresholds.json": True, "notes.txt": False, "sub/b.png": True,
             "sub/thresholds.json": False, ".cache/rank0/c.png": False, ".cache/key.json": False}
    for name in files:
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert remove_earlier_labels(str(tmp_path)) == 3
    assert {name: not (tmp_path / name).exists() for name in files} == files
    assert remove_earlier_labels(str(tmp_path / "missing")) == 0
