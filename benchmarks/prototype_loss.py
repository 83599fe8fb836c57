"""Benchmark: prototype EMA update + contrastive loss forward and backward (paper Eq. 3–4; docs/method.md "Prototypes", "Contrastive loss").

One iteration = what the align stage does with the encoder features: EMA update of the K×C bank
with the source features and mask, then L_cl^s + L_cl^t and its backward into both feature maps.
Sizes of the paper (ResNet-101, stride 8, batch 4+4): source 4×2048×90×160 (1280×720 input), target
4×2048×64×128 (1024×512), K = 19. Measured for this project (`PrototypeBank.update` +
`PrototypeContrastiveLoss`) and for the released code's loops (`benchmarks/reference.py`), each in
its own process: time per iteration (median), peak memory above the inputs, and the largest
difference of loss, prototypes and gradients between the two.

    python benchmarks/prototype_loss.py [--quick] [--reps N] [--threads T]
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks.common import PeakMemory, format_table, median, run_worker, timed  # noqa: E402

import torch  # noqa: E402

FULL = {"src": (4, 2048, 90, 160), "tgt": (4, 2048, 64, 128), "K": 19}
QUICK = {"src": (2, 256, 12, 20), "tgt": (2, 256, 8, 16), "K": 19}
ALPHA, TAU, ABSENT = 0.1, 100.0, "decay"  # released code's update (absent classes decay)


def make_mask(shape, num_classes: int, ignore_frac: float, g: torch.Generator, present: int) -> torch.Tensor:
    """B×h×w labels in 8×8 blocks of classes [0, present) with `ignore_frac` of the blocks 255."""
    B, h, w = shape
    coarse = torch.randint(0, present, (B, h // 8 + 1, w // 8 + 1), generator=g)
    coarse[torch.rand(coarse.shape, generator=g) < ignore_frac] = 255
    return coarse.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, :h, :w].contiguous()


def make_inputs(size: dict, seed: int = 0) -> dict:
    """Features built in place (no transient copy above the inputs), masks and initial prototypes."""
    g = torch.Generator().manual_seed(seed)
    K = size["K"]
    src = torch.empty(size["src"]).normal_(generator=g).relu_().requires_grad_()
    tgt = torch.empty(size["tgt"]).normal_(generator=g).relu_().requires_grad_()
    B, C, h, w = size["src"]
    src_mask = make_mask((B, h, w), K, 0.1, g, present=K - 3)  # 3 classes absent from the batch
    B, C, ht, wt = size["tgt"]
    tgt_mask = make_mask((B, ht, wt), K, 0.4, g, present=K)  # pseudo labels: more ignored pixels
    protos = torch.nn.functional.normalize(torch.randn(K, C, generator=g), dim=1)
    return {"src": src, "tgt": tgt, "src_mask": src_mask, "tgt_mask": tgt_mask, "protos": protos}


def make_step(impl: str, inp: dict):
    """A closure running one iteration; returns (step, state) where state["protos"] is the bank."""
    from spcl.losses import PrototypeContrastiveLoss
    from spcl.prototypes import PrototypeBank

    K, C = inp["protos"].shape
    state = {}
    if impl == "ours":
        bank = PrototypeBank(K, C, ALPHA, ABSENT)
        bank.set(inp["protos"])
        crit = PrototypeContrastiveLoss(TAU)

        def step():
            inp["src"].grad = inp["tgt"].grad = None
            bank.update(inp["src"].detach(), inp["src_mask"])
            loss = crit(inp["src"], inp["src_mask"], bank.prototypes) + crit(inp["tgt"], inp["tgt_mask"],
                                                                              bank.prototypes)
            loss.backward()
            state.update(loss=loss.detach(), protos=bank.prototypes)
    else:
        from benchmarks.reference import reference_contrastive_loss, reference_prototype_update
        state["protos"] = inp["protos"].clone()

        def step():
            inp["src"].grad = inp["tgt"].grad = None
            state["protos"] = reference_prototype_update(state["protos"], inp["src"], inp["src_mask"], ALPHA, ABSENT)
            loss = reference_contrastive_loss(inp["src"], inp["src_mask"], state["protos"], TAU) + \
                reference_contrastive_loss(inp["tgt"], inp["tgt_mask"], state["protos"], TAU)
            loss.backward()
            state["loss"] = loss.detach()
    return step, state


# ------------------------------------------------------------------------------ worker tasks
def task_time(task: dict) -> dict:
    inp = make_inputs(task["size"])
    step, _ = make_step(task["impl"], inp)
    times = timed(step, task["reps"], warmup=1)
    return {"times_s": times}


def task_memory(task: dict) -> dict:
    """Peak above the inputs of the first iteration in a fresh process (no warm-up: memory freed by a
    warm-up and kept by the allocator would hide part of the peak)."""
    inp = make_inputs(task["size"])
    step, _ = make_step(task["impl"], inp)
    inputs_mb = sum(t.numel() * t.element_size() for t in inp.values()) / 2**20
    with PeakMemory() as m:
        step()
    return {"peak_above_inputs_mb": m.peak_mb, "inputs_mb": inputs_mb, "method": m.method}


def task_check(task: dict) -> dict:
    """One iteration of each implementation from the same inputs: largest differences."""
    inp = make_inputs(task["size"])
    out = {}
    for impl in ("reference", "ours"):
        step, state = make_step(impl, inp)
        step()
        out[impl] = (state["loss"].clone(), state["protos"].clone(), inp["src"].grad.clone(), inp["tgt"].grad.clone())
    (lr, pr, gsr, gtr), (lo, po, gso, gto) = out["reference"], out["ours"]
    rel = lambda a, b: ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()  # noqa: E731
    return {"loss_reference": lr.item(), "loss_ours": lo.item(), "loss_abs_diff": (lo - lr).abs().item(),
            "prototype_max_abs_diff": (po - pr).abs().max().item(),
            "grad_src_max_rel_diff": rel(gso, gsr), "grad_tgt_max_rel_diff": rel(gto, gtr)}


HANDLERS = {"time": task_time, "memory": task_memory, "check": task_check}


def main():
    args = common.base_parser(__doc__.splitlines()[0]).parse_args()
    size = QUICK if args.quick else FULL
    reps = args.reps or (2 if args.quick else 3)
    script = os.path.abspath(__file__)
    results = {"machine": common.machine_info(args.threads), "sizes": size, "alpha": ALPHA, "temperature": TAU,
               "absent": ABSENT, "reps": reps, "impl": {}}
    for impl in ("reference", "ours"):
        t = run_worker(script, {"kind": "time", "impl": impl, "size": size, "reps": reps}, args.threads)
        mems = [run_worker(script, {"kind": "memory", "impl": impl, "size": size}, args.threads)
                for _ in range(1 if args.quick else 2)]
        results["impl"][impl] = {"time_s": median(t["times_s"]), "times_s": t["times_s"],
                                 "peak_above_inputs_mb": median([m["peak_above_inputs_mb"] for m in mems]),
                                 "peak_runs_mb": [m["peak_above_inputs_mb"] for m in mems],
                                 "inputs_mb": mems[0]["inputs_mb"], "memory_method": mems[0]["method"]}
    check = run_worker(script, {"kind": "check", "size": size}, args.threads)
    ref, ours = results["impl"]["reference"], results["impl"]["ours"]
    results["check"] = check
    results["speedup"] = ref["time_s"] / ours["time_s"]
    results["memory_ratio"] = ref["peak_above_inputs_mb"] / max(ours["peak_above_inputs_mb"], 1e-9)
    results["targets"] = {
        "speedup>=3": results["speedup"] >= 3.0,
        "memory_ratio>=1.5": results["memory_ratio"] >= 1.5,
        "same_loss_and_prototypes_1e-5": check["loss_abs_diff"] <= 1e-5 and check["prototype_max_abs_diff"] <= 1e-5,
    }
    rows = [[impl, r["time_s"], r["peak_above_inputs_mb"]] for impl, r in results["impl"].items()]
    rows.append(["ratio ref/ours", results["speedup"], results["memory_ratio"]])
    print(f"prototype EMA update + contrastive loss fwd/bwd, src {size['src']} tgt {size['tgt']} K={size['K']}, "
          f"{args.threads} thread(s), median of {reps}")
    print(format_table(["implementation", "s / iteration", "peak MB above inputs"], rows))
    print(f"loss ref {check['loss_reference']:.8f} ours {check['loss_ours']:.8f} (|diff| {check['loss_abs_diff']:.2e}); "
          f"prototypes max |diff| {check['prototype_max_abs_diff']:.2e}; grads max rel diff "
          f"src {check['grad_src_max_rel_diff']:.2e} tgt {check['grad_tgt_max_rel_diff']:.2e}")
    print("targets:", results["targets"])
    print("written", common.write_results("prototype_loss", results, args.quick))


if __name__ == "__main__":
    if not common.worker_main(HANDLERS):
        main()
