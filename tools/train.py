"""Train: the whole SPCL pipeline from one config (adv_warmup → prototypes → pseudo_labels → align →
pseudo_labels → self_train, or the stages of PIPELINE.STAGES), or one stage with --stage.

Examples:
    python tools/train.py --config configs/gta5_r101.yaml [KEY VALUE …]
    torchrun --nproc_per_node=4 tools/train.py --config configs/gta5_r101.yaml
    python tools/train.py --config configs/gta5_r101.yaml --stage align OUTPUT_DIR output/mine \
        MODEL.WEIGHTS warmup.pth PROTOTYPE.PATH prototypes.pth DATASETS.PSEUDO_DIR labels/

Resume: run the same command again. Finished stages (a manifest.json in their folder) are skipped;
the interrupted stage continues from its newest readable checkpoint with the same data stream, so
the result equals an uninterrupted run. A rerun whose config differs from the one the run folder
was made with stops and names the differing keys (--allow-config-change goes on anyway and records
the new config beside the old one).

Stop: SIGTERM or SIGUSR1 (a scheduler's preemption or time-limit warning; SOLVER.STOP_SIGNALS) makes a
training stage finish its iteration, save a checkpoint there and exit with 128 + the signal's number;
the same command resumes from it. One run at a time per OUTPUT_DIR: a second one into a folder in use
stops before writing and names the first (OUTPUT_DIR/.lock).

Start afresh: use a new OUTPUT_DIR (e.g. `OUTPUT_DIR output/run2`), or delete the run folder, or
delete one stage folder (`OUTPUT_DIR/<i>_<stage>`) to rerun that stage and the ones after it.

Flags go before the KEY VALUE overrides. Results: OUTPUT_DIR/summary.json, log.txt (the whole run), and a
folder per stage with config.yaml, log.txt, metrics.json, tb/ (TensorBoard) and checkpoints/.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESUMES_RUN, config_parser, run_main, setup  # noqa: E402

STAGE_NAMES = ("source_only", "adv_warmup", "prototypes", "pseudo_labels", "align", "self_train")


def main(argv=None):
    parser = config_parser(__doc__, config_required=True)
    parser.add_argument("--stage", default="", choices=("",) + STAGE_NAMES, metavar="NAME",
                        help="run only this stage, in OUTPUT_DIR/<NAME>, its inputs from MODEL.WEIGHTS, "
                             "PROTOTYPE.PATH, DATASETS.PSEUDO_DIR; one of: " + ", ".join(STAGE_NAMES))
    parser.add_argument("--allow-config-change", action="store_true",
                        help="resume or skip finished stages although the config differs from the recorded one")
    parser.add_argument("--check", action="store_true",
                        help="only check, writing nothing: the config's keys and values, that every input exists "
                             "(weights, dataset folders, list files), that MODEL.WEIGHTS loads into the model "
                             "and, for a rerun, that the config matches the run folder's; e.g. on a login node "
                             "before submitting a job")
    args = parser.parse_args(argv)
    if args.allow_config_change:
        args.opts = list(args.opts) + ["PIPELINE.ALLOW_CONFIG_CHANGE", "True"]
    cfg = setup(args)
    if args.check:
        return check(cfg, args.config, args.stage)
    from make_toy import prepare_toy_data
    from spcl.engine import run_pipeline
    from spcl.engine.pipeline import check_single_stage, format_summary, run_stage_once
    from spcl.utils import comm
    from spcl.utils.run_lock import run_lock

    if cfg.DATASETS.TOY.GENERATE:  # what the run would refuse, refused before the toy data are (re)written
        refuse_before_writing_data(cfg, args.stage)
    if args.stage:  # its inputs set and readable, and a rerun's config the recorded one, before any folder is made
        check_single_stage(cfg, args.stage, os.path.join(cfg.OUTPUT_DIR, args.stage))
    prepare_toy_data(cfg)  # configs/toy.yaml: the generated demo data, written on first use
    if args.stage:
        folder = os.path.join(cfg.OUTPUT_DIR, args.stage)
        with run_lock(cfg.OUTPUT_DIR):  # one run per folder, as run_pipeline
            done, ran = run_stage_once(cfg, args.stage, folder)
        if comm.is_main_process():
            if not ran:
                print(f"stage {args.stage} already finished in {folder} (delete the folder to run it again):")
            timed = {"seconds": done["seconds"]} if "seconds" in done else {}
            print(format_summary([{"stage": args.stage, **done["metrics"], **timed}]))
    else:
        run_pipeline(cfg)
    return 0


def refuse_before_writing_data(cfg, stage: str) -> None:
    """A run into a folder another run is writing, or (for the pipeline) a rerun with another config, is
    refused before `prepare_toy_data` regenerates DATASETS.DATA_DIR: a refused run must not replace the
    images a finished or running one was made from."""
    from spcl.engine.pipeline import check_run
    from spcl.utils.run_lock import held_by, in_use_error

    holder = held_by(cfg.OUTPUT_DIR)
    if holder:
        raise in_use_error(cfg.OUTPUT_DIR, holder)
    if not stage:
        check_run(cfg, datasets=False)


def check(cfg, config: str, stage: str) -> int:
    """--check: what a run checks before writing anything, without running it."""
    from spcl.engine.pipeline import check_inputs, check_run, check_single_stage, stage_plan
    from spcl.utils.logger import setup_logger
    from spcl.utils.run_lock import held_by, in_use_error

    setup_logger("")  # log lines (loading the weights) to the console only: --check writes nothing

    holder = held_by(cfg.OUTPUT_DIR)  # a run writing there now: submitting this one would be refused
    if holder:
        raise in_use_error(cfg.OUTPUT_DIR, holder)
    generated = bool(cfg.DATASETS.TOY.GENERATE)  # the toy's data are written by the run itself
    if stage:
        check_inputs(cfg, datasets=not generated)
        plan = check_single_stage(cfg, stage, os.path.join(cfg.OUTPUT_DIR, stage))
    else:
        check_run(cfg, datasets=not generated)
    if cfg.MODEL.WEIGHTS:  # readable, and fits MODEL.BACKBONE / NUM_CLASSES / ASPP_DILATIONS (< 1 s for ResNet-101)
        from spcl.modeling import build_segmentor, load_trained_segmentor

        if stage in ("prototypes", "pseudo_labels"):  # these need a trained model
            load_trained_segmentor(cfg, cfg.MODEL.WEIGHTS)
        else:
            build_segmentor(cfg)
    what = f"stage {stage}" if stage else "stages " + " → ".join(cfg.PIPELINE.STAGES)
    print(f"{config}: config and inputs OK ({what}; outputs in {cfg.OUTPUT_DIR})"
          + ("; the toy data are generated by the run" if generated else ""))
    if stage and os.path.isdir(os.path.join(cfg.OUTPUT_DIR, stage)):  # a rerun: what it will do with the folder
        print(f"a rerun: {stage} {plan}")
    elif not stage and os.path.isdir(cfg.OUTPUT_DIR):  # a rerun: what it will do with each stage folder
        print("a rerun: " + "; ".join(f"{name} {what}" for name, what in stage_plan(cfg)))
    return 0


if __name__ == "__main__":
    run_main(main, on_interrupt=RESUMES_RUN)
