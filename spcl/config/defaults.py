"""The one documented config tree of spcl (yacs). Every key: meaning, unit, paper/released value.

`spcl.config.get_cfg()` returns a clone of `_C`; experiment YAMLs under `configs/` override it.
Nothing else in the codebase holds a default for a key that lives here.
"""
from yacs.config import CfgNode as CN

_C = CN()
_C.OUTPUT_DIR = "output/default"  # where every stage writes its sub-folder
_C.SEED = 0  # seeds python, numpy, torch and the data samplers; same seed + config = same run; 0 … 2**32 - 1

# ------------------------------------------------------------------------------------ model ---
_C.MODEL = CN()
# resnet18 | resnet34 | resnet50 | resnet101 | resnet152 | vgg16 (spcl.modeling.backbones.BACKBONES;
# DeepLab-v2 / LargeFOV; docs/method.md, model)
_C.MODEL.BACKBONE = "resnet101"
_C.MODEL.NUM_CLASSES = 19  # 19 (GTA5, Synscapes) or 16 (SYNTHIA)
# Local path of initial weights: a torchvision ImageNet state dict of the backbone, or a checkpoint
# of this project. Empty = random init. Never downloaded.
_C.MODEL.WEIGHTS = ""
# Frozen BatchNorm (affine + running stats as buffers) in warm-up/align (released code; docs/method.md). self_train
# overrides it with SELF_TRAIN.FREEZE_BN.
_C.MODEL.FREEZE_BN = True
# Trainable BatchNorm only (FREEZE_BN False): which passes of warm-up and align, which forward the
# source and the target batch separately, update the running statistics used at test time and for
# pseudo labels. "target": the target passes only, so target images are tested under the statistics
# they were trained with; "all": both passes, a ~50/50 source/target mix that no training pass used
# (docs/method.md "Model"). No effect with frozen BN (paper configs) or in one-domain stages.
_C.MODEL.BN_RUNNING_STATS = "target"
_C.MODEL.ASPP_DILATIONS = [6, 12, 18, 24]  # DeepLab-v2 ASPP branches, outputs summed
_C.MODEL.HEAD_INIT_STD = 0.01  # ASPP weights ~ N(0, std)
_C.MODEL.DISC_CHANNELS = 64  # first width of the output-space discriminator (64-128-256-512-1)
_C.MODEL.CHANNELS_LAST = False  # channels-last memory format for the segmentor

# ----------------------------------------------------------------------------------- input ---
_C.INPUT = CN()
_C.INPUT.SOURCE_SIZE = [1280, 720]  # (W, H) source training resize; GTA5 1280x720, SYNTHIA 1280x760
_C.INPUT.TARGET_SIZE = [1024, 512]  # (W, H) target training resize in warm-up/align
_C.INPUT.TEST_SIZE = [1024, 512]  # (W, H) test-time resize; predictions go back to label size
# Colour jitter (brightness, contrast, saturation, hue); released code: on source only.
_C.INPUT.COLOR_JITTER = [0.5, 0.5, 0.5, 0.2]
_C.INPUT.SOURCE_JITTER = True
_C.INPUT.TARGET_JITTER = False
_C.INPUT.FLIP_PROB = 0.0  # horizontal flip in warm-up/align (released code: none)
# Self-training crops (released code; docs/method.md): image resized to BASE_SIZE, random scale, crop, flip, jitter.
_C.INPUT.SELF_TRAIN_BASE_SIZE = [2048, 1024]  # (W, H)
_C.INPUT.SELF_TRAIN_SCALE = [0.5, 1.5]
_C.INPUT.SELF_TRAIN_CROP = [1024, 512]  # (W, H)
_C.INPUT.SELF_TRAIN_FLIP_PROB = 0.5
_C.INPUT.SELF_TRAIN_JITTER = True
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]  # ImageNet, RGB in [0, 1]
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]
# Caffe-style input (BGR, 0-255, mean subtraction only) for old Caffe VGG weights; not default.
_C.INPUT.TO_BGR255 = False

# -------------------------------------------------------------------------------- datasets ---
_C.DATASETS = CN()
_C.DATASETS.DATA_DIR = "datasets"  # root holding gta5/, synthia/, synscapes/, cityscapes/
_C.DATASETS.SOURCE = "gta5_train"  # gta5_train | synthia_train | synscapes_train | cityscapes_train
_C.DATASETS.TARGET = "cityscapes_train"  # unlabeled target training set
_C.DATASETS.TEST = "cityscapes_val"  # evaluation set (target val)
# Optional list files (one relative image path a line); empty = every file found, sorted.
_C.DATASETS.SOURCE_LIST = ""
_C.DATASETS.TARGET_LIST = ""
_C.DATASETS.TEST_LIST = ""
# Class-balanced source sampling (released code, GTA5/SYNTHIA). CLASS_INDEX: JSON from
# tools/prepare_data.py; empty = <DATA_DIR>/<source>_class_index.json.
_C.DATASETS.CLASS_BALANCE = False
_C.DATASETS.CLASS_INDEX = ""
_C.DATASETS.CLASS_BALANCE_BLOCK = 3000  # draws per block of the class-frequency counter
# Folder of pseudo-label PNGs for `cityscapes_pseudo` (set by the pipeline; or by hand with --stage)
_C.DATASETS.PSEUDO_DIR = ""
# Generate the shipped toy dataset into DATA_DIR if it is missing (configs/toy.yaml).
_C.DATASETS.TOY = CN()
_C.DATASETS.TOY.GENERATE = False
_C.DATASETS.TOY.SEED = 0
_C.DATASETS.TOY.NUM_SOURCE = 200
_C.DATASETS.TOY.NUM_TARGET_TRAIN = 200
_C.DATASETS.TOY.NUM_TARGET_VAL = 50
_C.DATASETS.TOY.SIZE = [128, 64]  # (W, H)
# A custom domain from plain folders (spcl/data/datasets/folder.py), catalog names `folder_train`
# (unlabelled images, e.g. DATASETS.TARGET) and `folder_val` (optionally labelled, e.g. DATASETS.TEST).
# Paths are absolute or relative to the working directory, like every other path key.
_C.DATASETS.FOLDER = CN()
_C.DATASETS.FOLDER.TRAIN_DIR = ""  # folder of training images, searched recursively (JPEG/PNG)
_C.DATASETS.FOLDER.VAL_DIR = ""  # folder of val images, searched recursively
# Folder of val label maps (8-bit single-channel PNGs) mirroring VAL_DIR's sub-folders; "" = no labels.
_C.DATASETS.FOLDER.VAL_LABEL_DIR = ""
# Only files ending in IMAGE_SUFFIX are images ("" = any .jpg/.jpeg/.png); the label of `a/x<IMAGE_SUFFIX>`
# is `VAL_LABEL_DIR/a/x<LABEL_SUFFIX>` (with IMAGE_SUFFIX "" the image's extension is replaced).
_C.DATASETS.FOLDER.IMAGE_SUFFIX = ""
_C.DATASETS.FOLDER.LABEL_SUFFIX = ".png"
# Raw label value -> train id, as [[raw_id, train_id], ...]; raw ids not listed become 255 (ignore).
# Empty (and ID_MAP_FILE empty) = the label files hold train ids already (0..K-1, 255 ignore).
_C.DATASETS.FOLDER.ID_MAP = []
# The same table as a JSON file ({"raw_id": train_id, ...} or [[raw_id, train_id], ...]); used when set.
_C.DATASETS.FOLDER.ID_MAP_FILE = ""

# Check every file a stage reads before its first iteration (spcl/data/check.py; cached by file
# list, sizes and mtimes in OUTPUT_DIR/data_check_cache): a bad file stops the run at once, named.
_C.DATASETS.PREFLIGHT = True

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 2  # per process
# Page-locked host batches for faster, asynchronous copies to the GPU (ignored without CUDA).
_C.DATALOADER.PIN_MEMORY = True
# Keep the worker processes alive between passes over a loader (training loaders are endless: this
# only spares a re-spawn when a loader is iterated again). Used with NUM_WORKERS > 0; the paper configs
# set it (configs/_base_/schedule_paper.yaml).
_C.DATALOADER.PERSISTENT_WORKERS = False
# Batches each worker prepares ahead (torch's default 2); only used with NUM_WORKERS > 0.
_C.DATALOADER.PREFETCH_FACTOR = 2

# ------------------------------------------------------------------------------------ solver ---
# Shared optimiser settings (released code's numbers; docs/method.md). Per-stage lr, schedule length and batch live in the stage nodes.
_C.SOLVER = CN()
# The segmentor's optimiser: sgd (paper and released code: fine-tuning an ImageNet backbone) | adamw
# (networks trained from scratch, e.g. the toy; MOMENTUM is then Adam's beta1).
_C.SOLVER.OPTIMIZER = "sgd"
_C.SOLVER.MOMENTUM = 0.9
# torch's fused kernel for every optimiser step (the segmentor's SGD / AdamW, warm-up's Adam for D): the
# same update up to float rounding, 2-3.5x faster on a CPU, where torch otherwise steps one tensor at a
# time (benchmarks/optimizer_step.py; the quick start ~9 % faster). Off by default: rounded differently, a
# run is another sample of itself, so the numbers documented for the shipped configs would not repeat to
# the last digit.
_C.SOLVER.FUSED_OPTIMIZER = False
_C.SOLVER.WEIGHT_DECAY = 5e-4
_C.SOLVER.LR_POWER = 0.9  # poly: base * (1 - it / MAX_ITER) ** power
_C.SOLVER.HEAD_LR_FACTOR = 10.0  # ASPP classifier lr = 10x backbone lr
_C.SOLVER.CHECKPOINT_PERIOD = 2000  # iterations between checkpoints (resume points)
_C.SOLVER.KEEP_CHECKPOINTS = 2  # periodic checkpoints kept on disk (the final one always stays)
# Signals on which a training stage saves a checkpoint at the end of its current iteration and stops
# (exit status 128 + the signal's number); a rerun resumes there. SIGTERM is what schedulers and torchrun
# send before they kill a job; SIGUSR1 is a common advance warning (Slurm: --signal=USR1@120).
# [] = off (the signals keep their usual effect: a checkpoint is lost back to the last periodic one).
_C.SOLVER.STOP_SIGNALS = ["SIGTERM", "SIGUSR1"]
_C.SOLVER.LOG_PERIOD = 20  # iterations between log lines
# Iterations between target-val evaluations (0 = only at the end). The paper configs set 2000
# (configs/_base_/schedule_paper.yaml): a learning curve, not a single point after 40k iterations.
_C.SOLVER.EVAL_PERIOD = 0
# Mixed precision: "" (fp32) | "bf16" | "fp16" (with a gradient scaler). Loss and prototype math
# stay in fp32.
_C.SOLVER.AMP = ""
# Gradient accumulation: each iteration runs ACCUM_STEPS micro-batches of (per-process batch /
# ACCUM_STEPS) images, losses scaled by 1/ACCUM_STEPS, gradients summed, one optimiser step (and one
# DDP all-reduce). Activation memory per GPU drops about ACCUM_STEPS-fold (e.g. align 4 + 4 on one GPU
# as 4 micro-batches of 1 + 1) for ~ACCUM_STEPS forward/backward passes of the smaller batch per step.
# The data stream and resume positions are those of ACCUM_STEPS 1. Equal to the large batch only for
# per-sample terms with frozen BN: trainable BN sees micro-batch statistics; a CE mean is the mean of
# the micro-batch means (as across DDP processes); the align stage's prototype EMA is updated once per
# micro-batch (k updates of PROTOTYPE.ALPHA per iteration), and the `online` target mask thresholds
# each micro-batch. 1 = off.
_C.SOLVER.ACCUM_STEPS = 1

# One node per training stage (docs/method.md: pipeline, schedules). MAX_ITER is the poly horizon, STOP_ITER where it stops.
def _stage(base_lr, max_iter, stop_iter, source_batch, target_batch):
    node = CN()
    node.BASE_LR = base_lr
    node.MAX_ITER = max_iter
    node.STOP_ITER = stop_iter
    node.SOURCE_BATCH = source_batch  # global batch (split over processes)
    node.TARGET_BATCH = target_batch
    return node


_C.SOURCE_ONLY = _stage(2.5e-4, 62500, 40000, 8, 0)
_C.ADV_WARMUP = _stage(2.5e-4, 62500, 40000, 4, 4)
_C.ADV_WARMUP.DISC_LR = 1e-4  # Adam
_C.ADV_WARMUP.DISC_BETAS = [0.9, 0.99]
_C.ADV_WARMUP.ADV_WEIGHT = 0.001  # weight of the generator's adversarial loss
# The discriminator's source maps: softmax(logits / LOSS.SOURCE_TEMPERATURE) (released `warmup.py`
# divides src_pred by 1.8 before D sees it; target maps stay unsoftened) | False: softmax(logits).
_C.ADV_WARMUP.SOFTEN_SOURCE = True
_C.ALIGN = _stage(2.5e-4, 62500, 40000, 4, 4)
# Target mask of the contrastive loss (paper Eq. 5; docs/method.md): offline (pseudo labels written after warm-up,
# released code) | online (class thresholds of the current batch's own predictions).
_C.ALIGN.TARGET_MASK = "offline"
_C.SELF_TRAIN = _stage(5e-4, 31250, 20000, 0, 8)
_C.SELF_TRAIN.FREEZE_BN = False  # self-training trains BatchNorm (released code)

# --------------------------------------------------------------------------------- losses ---
_C.LOSS = CN()
_C.LOSS.SOURCE_TEMPERATURE = 1.8  # source CE on logits / 1.8 in warm-up and align (released code)
_C.LOSS.CONTRAST = CN()
# tau of Eq. 4: logits = q.p / tau. Released code: /100 (loss sits near 2 ln K, almost linear);
# 0.1 is the usual contrastive value.
_C.LOSS.CONTRAST.TEMPERATURE = 100.0
_C.LOSS.CONTRAST.WEIGHT = 1.0  # lambda (paper Table 6)
_C.LOSS.CONTRAST.SOURCE = True  # ablation switch: source term (paper Table 4)
_C.LOSS.CONTRAST.TARGET = True  # ablation switch: target term
# Divide each prototype by its norm inside the loss (paper Sec. 3.2: features and prototypes on the
# unit sphere). False = the released code: the bank's EMA of unit vectors, whose norm is below 1.
_C.LOSS.CONTRAST.NORMALIZE_PROTOTYPES = False

# ------------------------------------------------------------------------------ prototypes ---
_C.PROTOTYPE = CN()
_C.PROTOTYPE.ALPHA = 0.1  # EMA: p <- alpha p + (1 - alpha) batch mean; 1.0 = fixed prototypes
_C.PROTOTYPE.ABSENT = "keep"  # classes absent from the batch: keep (paper) | decay (released code)
_C.PROTOTYPE.INIT = "pixel_mean"  # pixel_mean (paper Eq. 2) | image_mean (released code)
_C.PROTOTYPE.SOURCE_MASK = "gt"  # gt (paper) | gt_and_pred (released: wrong predictions ignored)
_C.PROTOTYPE.NUM_IMAGES = 0  # source images used to initialise (0 = all)
_C.PROTOTYPE.PATH = ""  # prototype file (K, C) read by align; set by the pipeline

# ---------------------------------------------------------------------------- pseudo labels ---
_C.PSEUDO = CN()
_C.PSEUDO.THRESHOLD_CAP = 0.9  # class threshold = min(median confidence, cap)
# A diagnostic, never a real run: write ground truth instead of predictions, on the kept pixels ("kept")
# or on every pixel ("all"), so that self-training on them measures what label errors cost. Needs
# target-train labels (the toy).
_C.PSEUDO.ORACLE = ""
_C.PSEUDO.NUM_BINS = 65536  # histogram bins over [0, 1] (at most 65,536): thresholds within 1/NUM_BINS

# ---------------------------------------------------------------------------------- pipeline ---
_C.PIPELINE = CN()
# Stages run in order by tools/train.py (docs/method.md: pipeline). `pseudo_labels` may appear more than once.
_C.PIPELINE.STAGES = ["adv_warmup", "prototypes", "pseudo_labels", "align", "pseudo_labels",
                      "self_train"]
# Which checkpoint a training stage hands on: last (default) | best (best target-val mIoU: an
# ORACLE choice, marked as such in every report).
_C.PIPELINE.HANDOFF = "last"
# Rerunning into an OUTPUT_DIR whose stages ran with another config stops and names the differing
# keys (a resumed or skipped stage would otherwise mix two configs). True (tools/train.py
# --allow-config-change) goes on: finished stages keep their results and their config.yaml, the new
# config is recorded beside it. Keys that cannot change a result (log/eval/checkpoint periods,
# workers, TEST.*, paths of the data and of the run) may always change.
_C.PIPELINE.ALLOW_CONFIG_CHANGE = False

# -------------------------------------------------------------------------------------- test ---
_C.TEST = CN()
_C.TEST.BATCH_SIZE = 1
_C.TEST.FLIP = False  # average logits with the horizontally flipped input
_C.TEST.SCALES = [1.0]  # multi-scale: factors of TEST_SIZE, softmax averaged
_C.TEST.SAVE_COLOR = False  # write colour predictions
_C.TEST.SAVE_LABELIDS = False  # write Cityscapes-format labelId PNGs (official evaluation script)
_C.TEST.NUM_IMAGES = 0  # 0 = the whole test set
# Sliding-window inference (spcl/evaluation/sliding.py): the window slides over the image as the model
# sees it (resized to INPUT.TEST_SIZE, times each TEST.SCALES factor); overlapping logits are averaged,
# then upsampled to the output size. A window larger than the image is clipped to it.
_C.TEST.SLIDING = False
_C.TEST.WINDOW = [512, 512]  # (W, H) of a window, in pixels of the resized image
_C.TEST.STRIDE = [341, 341]  # (W, H) step between windows; the last window is flush with the border
