"""What a training job holds, component by component and phase by phase (load, train, the
reload that verifies the saved artifact), per GPU and on the host: :func:`estimate`, from the exact
counts of ``counts.py`` and how the job is launched (:class:`Launch`).

Measured constants say where they were measured; those that could not be (there is no GPU here)
say they are assumed.

Example::

    est = estimate(recipe, count_parameters(recipe.model.path, recipe.train), Launch(), cpu=True, precision="fp32")
    est["host_bytes"], est["phases"]["train"]
"""

from __future__ import annotations

from dataclasses import dataclass

from finetune.train.config import Recipe
from finetune.train.counts import Counts

GIB, MIB = 2**30, 2**20
# An idle process that has imported what `finetune train` imports (torch 2.13 CPU build,
# transformers, trl, peft, datasets, accelerate, tensorboard): 541 MiB VmHWM, measured here.
PROCESS_HOST = 545 * MIB
# The tokenizer and the memory-mapped dataset: loading the first tokenizer into that process adds
# 50-65 MiB (32k SentencePiece, 49k byte-level BPE, measured).
TOKENIZER_HOST = 60 * MIB
# Assumed, not measured (no GPU here): a CUDA process maps cuBLAS/cuDNN/NCCL into host memory, and
# its context, cuBLAS workspaces, NCCL buffers and the caching allocator's slack take GPU memory.
CUDA_HOST = int(1.5 * GIB)
CUDA_CONTEXT = int(1.5 * GIB)
# TRL's fused LM head projects tiles of at most 4,096 tokens x 32,768 vocabulary entries
# (trl 1.16: TOKEN_CHUNK_SIZE, _CHUNKED_LOGPROB_CHUNK_SIZE), never the whole seq x vocab logits.
HEAD_TOKENS, HEAD_VOCAB = 4096, 32768
# Without Triton (the CPU) those tiles are folded in torch, whose temporaries hold 7.5-8.8 fp32
# tiles at once (measured: tiny Llama at 512 tokens 8.0, SmolLM2 at 128 tokens 8.3, a hidden-512
# Llama at 384 tokens 8.8). With Triton one tile is projected and the kernel works in place.
CPU_HEAD_TILES = 8
# glibc serves allocations under its mmap threshold (which grows to 32 MiB at most) from the heap
# and keeps what is freed there, so on the CPU the forward's freed temporaries stay in RSS: one
# training step's activations take 1.77-1.91x the bytes the backward saves (measured: SmolLM2 at
# 128 and 384 tokens, a hidden-512 Llama at 384 tokens; 1.0x with MALLOC_MMAP_THRESHOLD_ pinned).
CPU_HEAP_FACTOR = 1.8
MMAP_THRESHOLD = 32 * MIB
# bitsandbytes 4-bit: two weights per byte and an absmax per block of 64 weights; with double
# quantization the absmax is 8-bit, with an fp32 absmax per 256 blocks.
NF4_BYTES = {True: 0.5 + 1 / 64 + 4 / (64 * 256), False: 0.5 + 4 / 64}
BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
PHASES = ("load", "train", "verify")


@dataclass(frozen=True)
class Launch:
    """How `finetune train` is launched: processes (one per GPU) and how they share the model."""

    gpus: int = 1  # processes per node
    nodes: int = 1
    zero: int = 0  # DeepSpeed ZeRO stage; 0: none
    fsdp: bool = False  # FSDP full shard (like ZeRO-3)
    offload_optimizer: bool = False
    offload_params: bool = False
    source: str = "no accelerate config"

    @property
    def world(self) -> int:
        return self.gpus * self.nodes

    @property
    def sharded(self) -> bool:
        return self.zero == 3 or self.fsdp

    def describe(self) -> str:
        how = f"ZeRO-{self.zero}" if self.zero else "FSDP full shard" if self.fsdp else \
            "DDP" if self.world > 1 else "one process"
        off = [w for w, on in (("optimizer", self.offload_optimizer), ("parameters", self.offload_params)) if on]
        return how + (f", {' and '.join(off)} offloaded to CPU" if off else "")


def tokens_per_forward(recipe: Recipe) -> tuple[int, str]:
    """Tokens one forward holds: `finetune train` runs one packed row per forward (accumulating
    the batch) unless FlashAttention takes the batch as one padding-free row."""
    t, seq = recipe.train, recipe.data.max_seq_length
    if t.packing and not t.attn_implementation.startswith("flash"):
        return seq, "one packed row per forward, the batch accumulated"
    return seq * t.per_device_batch_size, f"{t.per_device_batch_size} row(s) of {seq}"


def estimate(recipe: Recipe, counts: Counts, launch: Launch, cpu: bool, precision: str) -> dict:
    """Bytes each component takes per GPU (per process on a CPU run) and on the host (per node),
    and the phases of `finetune train` that hold it; a phase's sum is its peak, the largest the job's.

    Weights are stored in the training dtype (QLoRA: linear layers in 4-bit). Without DeepSpeed or
    FSDP, torch's AdamW keeps its moments in the parameters' dtype and there is no fp32 master copy
    (finetune loads the model in the training dtype); DeepSpeed keeps fp32 master weights, fp32
    gradients and fp32 moments of what trains (DeepSpeed's 18 bytes per parameter, sharded over the
    GPUs by ZeRO-2 and -3; ZeRO-3 also shards the weights); FSDP upcasts what trains to fp32 and
    shards everything. The model is loaded whole on every GPU first (before the trainer's arguments
    turn sharding on), and the verification after training reloads it unsharded on the main process.
    """
    t, prec = recipe.train, precision
    b = BYTES[prec]
    P, T, G = counts.params, counts.trainable, launch.world
    adapters, ds = t.method != "full", launch.zero in (2, 3)
    weights = int(counts.quantizable * NF4_BYTES[t.quantization.double_quant] + (P - counts.quantizable) * b) \
        if t.method == "qlora" else P * b
    # PEFT keeps adapters in fp32; TRL casts QLoRA's to bf16, and DeepSpeed trains in the model's dtype.
    a = 2 if t.method == "qlora" or (ds and b == 2) else 4
    adam = t.optimizer.startswith("adamw_torch")

    def state(dtype_bytes: int) -> int:
        """Optimizer state per trained parameter: AdamW's two moments, 8-bit AdamW's two bytes, SGD's none."""
        return 2 * dtype_bytes if adam else 2 if "8bit" in t.optimizer else 0

    rows = []

    def put(name, nbytes, phases=PHASES, *, on="device", note="", kind="other"):
        """on: device (per GPU; per process on the host for CPU runs), main (the main process's device
        only), host (per process), node (once per node); kind "states": the model states (weights,
        gradients, master weights, optimizer state)."""
        rows.append({"name": name, "bytes": int(nbytes), "phases": list(phases), "on": on, "note": note, "kind": kind})

    off_optimizer = "host" if launch.offload_optimizer else "device"
    off_params = "host" if launch.offload_params else "device"
    put("python process (torch, transformers, trl, peft, datasets)", PROCESS_HOST + (0 if cpu else CUDA_HOST),
        on="host", note="measured here" + ("" if cpu else " + 1.5 GiB of CUDA libraries (assumed)"))
    put("tokenizer and data loader", TOKENIZER_HOST, on="host", note="measured here")
    if not cpu:
        put("CUDA context, workspaces, allocator slack", CUDA_CONTEXT, note="assumed")
    label = f"weights ({'linear layers NF4 4-bit, the rest ' + prec if t.method == 'qlora' else prec})"
    if launch.sharded:
        put(label + ", whole on every rank while loading", weights, ["load"],
            note="finetune train loads the model before the trainer turns sharding on")
        upcast = T * (4 - b) if launch.fsdp and not adapters else 0  # FSDP's fp32 copy of what trains
        put(f"{label}, sharded over {G}", (weights + upcast) / G, ["train", "verify"], on=off_params, kind="states")
    else:
        put(label, weights, kind="states")
    if adapters:
        put(f"adapter weights ({'fp32' if a == 4 or launch.fsdp else 'bf16'})",
            T * (4 if launch.fsdp else a) / (G if launch.sharded else 1), ["train", "verify"], on=off_params, kind="states")
    trained = a if adapters else b
    if ds:
        low, master = (2, 4) if b < 4 else (0, 0)
        if low:
            put(f"gradients (16-bit), sharded over {G}", T * low / G, ["train", "verify"], on=off_optimizer,
                kind="states")
        put(f"fp32 gradients, master weights and optimizer state, sharded over {G}",
            T * (4 + master + state(4)) / G, ["train", "verify"], on=off_optimizer,
            note=f"{t.optimizer}: {state(4)} bytes of state per parameter", kind="states")
    elif launch.fsdp:
        put(f"gradients (fp32), sharded over {G}", T * 4 / G, ["train"], on=off_optimizer, kind="states")
        put(f"optimizer state, sharded over {G}", T * state(4) / G, ["train", "verify"], on=off_optimizer,
            note=f"{t.optimizer} on the fp32 copy accelerate makes of what trains", kind="states")
    else:
        put(f"gradients ({'fp32' if trained == 4 else '16-bit'})", T * trained, ["train"], kind="states")
        put("optimizer state", T * state(trained), ["train", "verify"],
            note=f"{t.optimizer}, in the parameters' dtype" if adam else t.optimizer, kind="states")
    if launch.zero == 3:
        put("parameters gathered for compute", 4 * counts.largest_module, ["train"],
            note="DeepSpeed's figure: 4 bytes x the largest module's parameters", kind="states")
    elif launch.fsdp:
        put("decoder layers gathered for compute", 2 * counts.decoder_layer * b, ["train"],
            note="the current layer and the prefetched next, unsharded", kind="states")

    tokens, how = tokens_per_forward(recipe)
    act, other = (_activations(recipe, counts, tokens, prec, a, ckpt)
                  for ckpt in (t.gradient_checkpointing, not t.gradient_checkpointing))
    heap = cpu and tokens * max(x.widest for x in counts.layers) * 4 < MMAP_THRESHOLD  # glibc's heap serves them
    put(f"activations ({tokens:,} tokens, checkpointing {'on' if t.gradient_checkpointing else 'off'})", act,
        ["train", "verify"] if heap else ["train"],
        note=f"{how}; checkpointing {'off' if t.gradient_checkpointing else 'on'}: {other / GIB:.2f} GiB")
    if heap:
        put("freed temporaries the heap keeps (CPU)", act * (CPU_HEAP_FACTOR - 1), ["train", "verify"],
            note=f"glibc keeps them: {CPU_HEAP_FACTOR}x the saved bytes in all, measured here")
    rows_ = min(tokens, HEAD_TOKENS)
    tile = rows_ * min(counts.vocab, HEAD_VOCAB)
    head = (CPU_HEAD_TILES * tile * 4 if cpu else tile * b) + tokens * counts.hidden * 4 \
        + (0 if adapters else counts.vocab * counts.hidden * 4)  # fp32 gradients of the hidden states (and head)
    put("LM head tiles (fused: the logits never exist whole)", head, ["train"],
        note=f"{rows_:,} tokens x {min(counts.vocab, HEAD_VOCAB):,} vocabulary a tile"
        + (f"; {CPU_HEAD_TILES} fp32 tiles of torch temporaries on the CPU" if cpu else ""))
    pages = counts.checkpoint_bytes or P * 2
    put("checkpoint files mapped while loading", pages, ["load"], on="node", note="page cache, once per node")
    if t.verify_samples:
        reloaded = weights + T * (2 if t.method == "qlora" else 4 if adapters else 0)
        put("verification: the base reloaded with the saved adapter" if adapters else
            "verification: the saved model reloaded", reloaded, ["verify"], on="main",
            note="unsharded, by the main process" + ("" if cpu else " on its GPU"))
        logits = recipe.data.max_seq_length * counts.vocab * (b + 4 + (4 if b < 4 else 0))
        if cpu:
            put("verification: reloaded checkpoint files, then a sample's logits", max(pages, logits), ["verify"],
                on="main", note="the larger of the two")
        else:
            put("verification: a sample's logits (upcast to fp32 for the loss)", logits, ["verify"], on="main")
            put("verification: reloaded checkpoint files", pages, ["verify"], on="node")

    for row in rows:  # a CPU run holds everything on the host
        on_gpu = row["on"] in ("device", "main") and not cpu
        row["gpu_bytes"] = row["bytes"] if on_gpu else 0
        row["host_bytes"] = 0 if on_gpu else row["bytes"] * (1 if row["on"] in ("node", "main") else launch.gpus)
    phases = {p: {"gpu_bytes": sum(r["gpu_bytes"] for r in rows if p in r["phases"]),
                  "host_bytes": sum(r["host_bytes"] for r in rows if p in r["phases"])} for p in PHASES}
    return {"precision": prec, "tokens_per_forward": tokens, "components": rows, "phases": phases,
            "per_gpu_bytes": max(v["gpu_bytes"] for v in phases.values()),
            "host_bytes": max(v["host_bytes"] for v in phases.values())}


def _activations(recipe: Recipe, counts: Counts, tokens: int, prec: str, a: int, ckpt: bool) -> int:
    """Bytes the backward keeps (counts.py's formula, in the activations' dtype) for ``tokens`` tokens in one forward."""
    t, b = recipe.train, BYTES[prec]
    # Per adapted linear layer: dropout's output and mask; and in 16-bit training with fp32
    # adapters, autocast's 16-bit copy of the input PEFT casts to fp32 for them.
    extra = (b + 1 if t.lora and t.lora.dropout > 0 else 0) + (2 if b == 2 and a == 4 else 0)

    def layer(x):
        return (b * (x.per_token * tokens + x.constant) + (4 - b) * 2 * counts.hidden * tokens
                + extra * x.adapted_inputs * tokens)

    if not ckpt:
        return sum(layer(x) for x in counts.layers)
    return len(counts.layers) * counts.hidden * tokens * b + max(layer(x) for x in counts.layers)
