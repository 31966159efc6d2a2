"""``finetune plan``: the memory a training job needs per GPU and on the host, and its step time,
before it is queued; and when it does not fit, the cheapest single change that makes it fit.

Reads top to bottom: count the model's parameters exactly on the meta device (``memory.py``,
config only); read how the job will be launched (the accelerate config: DDP, DeepSpeed ZeRO-2/3
with or without CPU offload, FSDP); sum what each process holds in each phase of ``finetune
train`` (load, train, the reload that verifies the saved artifact); compare the largest phase with
the GPU (or, for a CPU run, the host); if it does not fit, apply the changes below one at a time, in
order of what they cost, and name the first one whose re-estimate fits: gradient checkpointing; a
smaller per-device batch with more accumulation (same effective batch); QLoRA instead of LoRA;
ZeRO-2, then ZeRO-3 across the GPUs given; optimizer, then also parameter, offload to CPU; more
GPUs; no verification reload.

What each phase holds, and why, is in ``memory.py``; the counts it starts from in ``counts.py``.

Example::

    result = plan(load_recipe("recipes/smollm2/traces-lora.yaml", [], Recipe), target("h100"), Launch())
    result["fits"], result["per_gpu_bytes"], result["cheapest_change"]
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from finetune import FinetuneError
from finetune.train.config import Quantization, Recipe
from finetune.train.counts import Counts, count_parameters
from finetune.train.memory import GIB, MIB, PHASES, Launch, estimate, tokens_per_forward

MFU = 0.4  # achieved share of the peak bf16 tensor FLOP/s, typical of dense training on H100/H200
# name -> (what nvidia-smi calls it, memory it reports, dense bf16 TFLOP/s from the datasheet)
GPUS = {
    "h100": ("NVIDIA H100 80GB (SXM)", 81559 * MIB, 989.4),
    "h200": ("NVIDIA H200 141GB", 143771 * MIB, 989.4),
    "a100": ("NVIDIA A100 80GB", 81920 * MIB, 312.0),
    "a100-40gb": ("NVIDIA A100 40GB", 40960 * MIB, 312.0),
    "l40s": ("NVIDIA L40S 48GB", 46068 * MIB, 362.1),
}


@dataclass(frozen=True)
class Target:
    """Where the job runs: a kind of GPU (memory per GPU), or the CPU (memory of the host)."""

    name: str
    label: str
    memory: int  # bytes per GPU, or of the host for the CPU
    host_memory: int | None = None  # bytes per node; checked only when given (always for the CPU)

    @property
    def cpu(self) -> bool:
        return self.name == "cpu"


def target(name: str, gpu_memory_gib: float | None = None, host_memory_gib: float | None = None) -> Target:
    """``name``: a key of GPUS, or ``cpu`` (memory: the given size, else this machine's)."""
    if name == "cpu":
        host = int(host_memory_gib * GIB) if host_memory_gib else _this_host_memory()
        return Target("cpu", "CPU (host memory)", host, host)
    if name not in GPUS:
        raise FinetuneError(f"--gpu {name!r}: choose one of {', '.join([*GPUS, 'cpu'])}")
    label, memory, _ = GPUS[name]
    return Target(name, label, int(gpu_memory_gib * GIB) if gpu_memory_gib else memory,
                  int(host_memory_gib * GIB) if host_memory_gib else None)


def _this_host_memory() -> int:
    with open("/proc/meminfo") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemTotal"))




def read_launch(path: str | None, gpus: int | None, nodes: int | None) -> tuple[Launch, bool]:
    """The launch an accelerate config describes (``--gpus``/``--nodes`` override its counts), and
    whether it runs on the CPU (``use_cpu: true``)."""
    import yaml

    if path is None:
        return Launch(gpus=gpus or 1, nodes=nodes or 1), False
    file = Path(path)
    if not file.is_file():
        raise FinetuneError(f"--accelerate-config {path} does not exist (the shipped ones are in accelerate_configs/)")
    try:
        cfg = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise FinetuneError(f"--accelerate-config {path}: not valid YAML ({exc})") from None
    kind = str(cfg.get("distributed_type", "NO")).upper()
    ds = dict(cfg.get("deepspeed_config") or {})
    if ds.get("deepspeed_config_file"):  # a DeepSpeed JSON instead of the inline keys
        raw = json.loads(Path(ds["deepspeed_config_file"]).read_text()).get("zero_optimization", {})
        ds = {"zero_stage": raw.get("stage", 0),
              "offload_optimizer_device": (raw.get("offload_optimizer") or {}).get("device", "none"),
              "offload_param_device": (raw.get("offload_param") or {}).get("device", "none")}
    fsdp = dict(cfg.get("fsdp_config") or {})
    machines = int(cfg.get("num_machines") or 1)
    launch = Launch(
        gpus=gpus or max(1, int(cfg.get("num_processes") or 1) // machines), nodes=nodes or machines,
        zero=int(ds.get("zero_stage") or 0) if kind == "DEEPSPEED" else 0, fsdp=kind == "FSDP",
        offload_optimizer=kind == "DEEPSPEED" and ds.get("offload_optimizer_device") == "cpu"
        or kind == "FSDP" and bool(fsdp.get("fsdp_offload_params")),
        offload_params=kind == "DEEPSPEED" and ds.get("offload_param_device") == "cpu"
        or kind == "FSDP" and bool(fsdp.get("fsdp_offload_params")),
        source=str(path))
    return launch, bool(cfg.get("use_cpu"))


def precision_for(requested: str, where: Target) -> str:
    """``train.precision`` on ``where``: auto is bf16 on these GPUs (all bf16-capable), fp32 on the CPU."""
    if where.cpu and requested in ("bf16", "fp16"):
        raise FinetuneError(f"train.precision {requested} needs a GPU: set train.precision: fp32 (or auto) "
                            "to plan a CPU run, or plan for a GPU with --gpu")
    return ("fp32" if where.cpu else "bf16") if requested == "auto" else requested


def step_time(recipe: Recipe, counts: Counts, launch: Launch, prec: str, gpu: str) -> dict:
    """Seconds per optimizer step on ``gpu`` at MFU 0.4. FLOPs per token: 6 per weight a token is
    multiplied by for full training (2 forward, 4 backward); with adapters 4 per frozen weight (the
    backward still computes the activations' gradients, not the weights') + 6 per adapter
    weight; +2 per weight with gradient checkpointing (the forward again); attention 12 x layers x
    (heads x head_dim) x max_seq_length (16 with checkpointing; packed samples attend to less).
    Llama 4's routed experts count whole: transformers runs all of them on every token."""
    t, seq = recipe.train, recipe.data.max_seq_length
    layers = len(counts.layers)
    ckpt = 2 * counts.matmul if t.gradient_checkpointing else 0
    weights = 6 * counts.matmul if t.method == "full" else 4 * counts.matmul + 6 * counts.trainable
    attention = (16 if t.gradient_checkpointing else 12) * layers * counts.attention_width * seq
    flops = weights + ckpt + attention
    tokens = seq * t.per_device_batch_size * t.gradient_accumulation_steps * launch.world
    label, _, tflops = GPUS[gpu]
    rate = tflops * 1e12 * MFU * (0.5 if prec == "fp32" else 1.0)  # fp32 runs at the TF32 rate, half
    return {"gpu": label, "flops_per_token": flops, "tokens_per_step": tokens, "peak_tflops": tflops, "mfu": MFU,
            "tf32": prec == "fp32", "seconds": flops * tokens / (rate * launch.world)}


def deepspeed_estimate(counts: Counts, launch: Launch, est: dict) -> dict | None:
    """DeepSpeed's own estimate of the model states per GPU and per node for ZeRO-2/3, beside ours
    (the weights, gradients, master weights and optimizer state of the train phase). DeepSpeed's
    assumes every parameter trains (2 bytes of 16-bit weights + 18 of gradients, fp32 master
    weights and Adam moments), so for adapters it is the figure of full training, not this job's.
    (The ``..._all_cold`` functions print these same numbers.)"""
    if launch.zero not in (2, 3):
        return None
    import torch

    if not torch.cuda.is_available():  # else DeepSpeed warns, on stdout, that it guessed the CPU
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if launch.zero == 2:
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

        cpu, gpu = estimate_zero2_model_states_mem_needs(
            counts.params, num_gpus_per_node=launch.gpus, num_nodes=launch.nodes, cpu_offload=launch.offload_optimizer)
    else:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            counts.params, counts.largest_module, num_gpus_per_node=launch.gpus, num_nodes=launch.nodes,
            cpu_offload=launch.offload_optimizer, cpu_offload_params=launch.offload_params, zero_init=True)
    ours = [r for r in est["components"] if r["kind"] == "states" and "train" in r["phases"]]
    return {"stage": launch.zero, "gpu_bytes": int(gpu), "host_bytes": int(cpu),
            "ours_gpu_bytes": sum(r["gpu_bytes"] for r in ours), "ours_host_bytes": sum(r["host_bytes"] for r in ours),
            "function": f"deepspeed.runtime.zero.{'stage_1_and_2' if launch.zero == 2 else 'stage3'}."
                        f"estimate_zero{launch.zero}_model_states_mem_needs"}


def _changes(recipe: Recipe, launch: Launch, where: Target):
    """(what to change, the recipe and launch with it), cheapest first."""
    t = recipe.train

    def with_train(**update):
        return recipe.model_copy(update={"train": t.model_copy(update=update)})

    if not t.gradient_checkpointing:
        yield "train.gradient_checkpointing=true", with_train(gradient_checkpointing=True), launch
    if not tokens_per_forward(recipe)[1].startswith("one packed row"):
        rows = t.per_device_batch_size
        for smaller in (d for d in range(rows - 1, 0, -1) if rows % d == 0):
            accumulate = t.gradient_accumulation_steps * rows // smaller
            yield (f"train.per_device_batch_size={smaller} train.gradient_accumulation_steps={accumulate}",
                   with_train(per_device_batch_size=smaller, gradient_accumulation_steps=accumulate), launch)
    if t.method == "lora":
        compute = "float32" if where.cpu else "bfloat16"
        yield (f"train.method=qlora train.quantization='{{compute_dtype: {compute}}}'",
               with_train(method="qlora", quantization=Quantization(compute_dtype=compute)), launch)
    if where.cpu:
        return
    if launch.world > 1 and not launch.fsdp:
        for stage in (2, 3):
            if launch.zero < stage:
                yield (f"--accelerate-config accelerate_configs/zero{stage}.yaml (ZeRO-{stage} over {launch.world} GPUs)",
                       recipe, replace(launch, zero=stage, source=f"accelerate_configs/zero{stage}.yaml"))
    zero3 = replace(launch, zero=3, fsdp=False)
    if launch.fsdp and not launch.offload_params:
        yield ("fsdp_offload_params: true in the FSDP config (parameters, gradients and optimizer state on the "
               "host)", recipe, replace(launch, offload_optimizer=True, offload_params=True))
    elif not launch.offload_optimizer:
        yield ("ZeRO-3 with offload_optimizer_device: cpu (the optimizer state on the host)", recipe,
               replace(zero3, offload_optimizer=True))
    if not launch.offload_params and not launch.fsdp:
        yield ("--accelerate-config accelerate_configs/zero3_offload.yaml (ZeRO-3, optimizer and parameters "
               "on the host)", recipe, replace(zero3, offload_optimizer=True, offload_params=True,
                                                source="accelerate_configs/zero3_offload.yaml"))
    base = launch if launch.sharded else zero3
    for world in (2 ** k for k in range(1, 8)):
        if world > launch.world:
            gpus, nodes = min(world, 8), max(1, world // 8)
            yield (f"{world} GPUs ({nodes} node(s) x {gpus}) with {base.describe()}", recipe,
                   replace(base, gpus=gpus, nodes=nodes))
    if t.verify_samples:
        yield "train.verify_samples=0 (no reload of the saved artifact after training)", with_train(verify_samples=0), launch


def _fits(est: dict, where: Target) -> bool:
    if where.cpu:
        return est["host_bytes"] <= where.memory
    return est["per_gpu_bytes"] <= where.memory and (where.host_memory is None or est["host_bytes"] <= where.host_memory)


def plan(recipe: Recipe, where: Target, launch: Launch, counts: Counts | None = None) -> dict:
    """The plan of ``recipe`` launched as ``launch`` on ``where``: components, phase peaks, the
    verdict, the cheapest single change when it does not fit, DeepSpeed's estimate, the step time."""
    counts = counts or count_parameters(recipe.model.path, recipe.train)
    est = estimate(recipe, counts, launch, where.cpu, precision_for(recipe.train.precision, where))
    fits = _fits(est, where)
    change = None
    if not fits:
        for what, changed, launched in _changes(recipe, launch, where):
            again = estimate(changed, counts, launched, where.cpu, precision_for(changed.train.precision, where))
            if _fits(again, where):
                change = {"change": what, "per_gpu_bytes": again["per_gpu_bytes"], "host_bytes": again["host_bytes"]}
                break
    binding = max(PHASES, key=lambda p: est["phases"][p]["host_bytes" if where.cpu else "gpu_bytes"])
    result = {
        "recipe_model": recipe.model.path, "model_type": counts.model_type, "method": recipe.train.method,
        "target": asdict(where), "launch": {**asdict(launch), "world": launch.world, "describe": launch.describe()},
        "parameters": {"total": counts.params, "trainable": counts.trainable, "quantizable": counts.quantizable,
                       "largest_module": counts.largest_module, "decoder_layer": counts.decoder_layer},
        **est, "peak_phase": binding, "fits": fits, "cheapest_change": change,
        "deepspeed": deepspeed_estimate(counts, launch, est),
        "step_time": step_time(recipe, counts, launch, est["precision"], "h100" if where.cpu else where.name),
    }
    result["verdict"] = verdict(result)
    return result


def verdict(result: dict) -> str:
    """``fits: X GiB of Y GiB per GPU`` or ``does not fit: X GiB > Y GiB; cheapest change: ...``."""
    cpu = result["target"]["name"] == "cpu"
    have = result["target"]["memory"] / GIB
    need = (result["host_bytes"] if cpu else result["per_gpu_bytes"]) / GIB
    unit = "on the host" if cpu else "per GPU"
    host = result["target"]["host_memory"]
    if result["fits"]:
        return f"fits: {need:.2f} GiB of {have:.2f} GiB {unit}"
    short = f"{need:.2f} GiB > {have:.2f} GiB {unit}" if need > have else \
        f"{result['host_bytes'] / GIB:.2f} GiB > {host / GIB:.2f} GiB on the host"
    change = result["cheapest_change"]
    phase = result["peak_phase"]
    short += f" (peak in the {phase} phase" + {
        "load": ": finetune train loads the whole model on every GPU before the trainer shards it)",
        "verify": ": the check after training reloads the model unsharded next to the trained one)",
        "train": ")"}[phase]
    if change is None:
        return (f"does not fit: {short}; no single change (checkpointing, smaller batch, QLoRA, ZeRO, offload, "
                "more GPUs, no verification) makes it fit")
    then = change["host_bytes"] if cpu else change["per_gpu_bytes"]
    return f"does not fit: {short}; cheapest change: {change['change']} (then {then / GIB:.2f} GiB {unit})"


def format_plan(result: dict) -> str:
    """The plan as a plain-text table and the verdict line."""
    p, cpu = result["parameters"], result["target"]["name"] == "cpu"
    lines = [f"model {result['recipe_model']} ({result['model_type']}): {p['total']:,} parameters; "
             f"{result['method']}: {p['trainable']:,} trainable ({p['trainable'] / p['total']:.2%})",
             f"run: {'CPU' if cpu else str(result['launch']['world']) + ' x ' + result['target']['label']}, "
             f"{result['launch']['describe']}, {result['precision']}, {result['tokens_per_forward']:,} tokens per forward",
             "", f"{'component':<72} {'per GPU':>9} {'host':>9}  phases  note"]
    for r in result["components"]:
        gpu = f"{r['gpu_bytes'] / GIB:.2f}" if r["gpu_bytes"] else "-"
        host = f"{r['host_bytes'] / GIB:.2f}" if r["host_bytes"] else "-"
        phases = "all" if len(r["phases"]) == 3 else ",".join(r["phases"])
        lines.append(f"{r['name']:<72} {gpu:>9} {host:>9}  {phases:<7} {r['note']}")
    def gib(n):
        return "-" if cpu else f"{n / GIB:.2f}"

    for name, v in result["phases"].items():
        lines.append(f"{'  phase ' + name + (' (peak)' if name == result['peak_phase'] else ''):<72} "
                     f"{gib(v['gpu_bytes']):>9} {v['host_bytes'] / GIB:>9.2f}")
    lines.append(f"{'total: the largest phase (GiB)':<72} {gib(result['per_gpu_bytes']):>9} "
                 f"{result['host_bytes'] / GIB:>9.2f}")
    ds = result["deepspeed"]
    if ds:
        lines.append(f"DeepSpeed's estimate ({ds['function']}): model states {ds['gpu_bytes'] / GIB:.2f} GiB per GPU, "
                     f"{ds['host_bytes'] / GIB:.2f} GiB per node; ours {ds['ours_gpu_bytes'] / GIB:.2f} GiB per GPU, "
                     f"{ds['ours_host_bytes'] / GIB:.2f} GiB per node"
                     + ("" if result["method"] == "full" else
                        " (DeepSpeed's assumes every parameter trains; only the adapter does here, so ours counts "
                        "2 bytes per frozen weight and the 18 of gradients, master and Adam states per adapter weight)"))
    s = result["step_time"]
    lines.append(f"step time: ~{s['seconds']:.3g} s per optimizer step ({s['tokens_per_step']:,} tokens, "
                 f"{s['flops_per_token'] / 1e9:.3g} GFLOP per token) on {result['launch']['world']} x "
                 f"{s['gpu']} at {s['mfu']:.0%} of {s['peak_tflops']:g} TFLOP/s"
                 + (" (TF32 rate: half)" if s["tf32"] else "") + (" (this plan is for a CPU run, far slower)" if cpu else ""))
    lines.append(result["verdict"])
    return "\n".join(lines)
