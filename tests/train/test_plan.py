"""`finetune plan`: exact parameter counts (PEFT's own), memory components worked out by hand,
verdicts whose cheapest change really fits, ZeRO-3 sharding, exit codes, and the host memory it
predicts for CPU runs against the peak RSS of real `finetune train` runs (within 25%)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from finetune import FinetuneError
from finetune.cli import main
from finetune.contracts.schema import load_recipe
from finetune.train.config import Recipe, Train
from finetune.train.counts import count_parameters
from finetune.train.memory import GIB, MIB, NF4_BYTES, Launch
from finetune.train.plan import plan, read_launch, target
from tests.conftest import REPO
from tests.train.conftest import make_recipe

CODE = REPO / "recipes" / "code-llama-4"
# A real run's peak RSS (VmHWM of the `finetune train` process, benchmarks/peak.py).
CHILD = ("import sys; sys.path.insert(0, 'benchmarks'); from peak import peak_rss_mb; from finetune.cli import main; "
         "rc = main(sys.argv[1:]); print(f'PEAK_RSS_MB {peak_rss_mb():.1f}'); sys.exit(rc)")


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    """Config-only folders (no weights) of real shapes: Code Llama 7B and 34B."""
    from transformers import LlamaConfig

    root = tmp_path_factory.mktemp("configs")
    LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, vocab_size=32016, rope_theta=1e6).save_pretrained(root / "7b")
    LlamaConfig(hidden_size=8192, intermediate_size=22016, num_hidden_layers=48, num_attention_heads=64,
                num_key_value_heads=8, vocab_size=32000, rope_theta=1e6).save_pretrained(root / "34b")
    return {"7b": root / "7b", "34b": root / "34b"}


def _row(result, prefix):
    (row,) = [r for r in result["components"] if r["name"].startswith(prefix)]
    return row


def _plan(recipe_path, *overrides, gpu="h100", memory=None, config=None, gpus=None):
    launch, cpu = read_launch(config, gpus, None)
    return plan(load_recipe(recipe_path, list(overrides), Recipe), target("cpu" if cpu else gpu, memory), launch)


@pytest.mark.parametrize("name", ["spm-hermes", "spm-llama4"])
def test_adapter_counts_are_peft_s_own(name, models, capsys):
    """Counted on the meta device = PEFT's print_trainable_parameters on the loaded model."""
    from peft import get_peft_model

    from finetune.train.model import adapter_config, load_model

    train = Train(method="lora", lora={"r": 8, "dropout": 0.0})
    counts = count_parameters(str(models[name]), train)
    base = load_model(str(models[name]), train, "fp32")
    get_peft_model(base, adapter_config(train, base)).print_trainable_parameters()
    trainable, everything = (int(x.replace(",", "")) for x in
                             re.search(r"trainable params: ([\d,]+) \|\| all params: ([\d,]+)", capsys.readouterr().out).groups())
    assert (counts.trainable, counts.params + counts.trainable) == (trainable, everything)
    if name == "spm-hermes":  # 2 layers, hidden 64, 2 heads x 32 (1 kv head), intermediate 192, r 8
        per_layer = 8 * ((64 + 64) + (64 + 32) * 2 + (64 + 64) + (64 + 192) * 3)
        assert counts.trainable == 2 * per_layer == 19_456
        assert counts.params == 2 * 32_002 * 64 + 2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 192 + 2 * 64) + 64


def test_cpu_components_worked_out_by_hand(models, prepared, tmp_path):
    recipe = make_recipe(models["spm-hermes"], prepared["spm-hermes"], tmp_path / "r")  # LoRA r 8, 512 tokens
    result = plan(recipe, target("cpu"), Launch())
    P, T = 4_194_880, 19_456
    assert result["precision"] == "fp32" and result["tokens_per_forward"] == 512  # one packed row per forward
    assert _row(result, "weights (fp32)")["host_bytes"] == 4 * P
    assert _row(result, "adapter weights (fp32)")["host_bytes"] == 4 * T
    assert _row(result, "gradients (fp32)")["host_bytes"] == 4 * T
    assert _row(result, "optimizer state")["host_bytes"] == 8 * T  # AdamW's two fp32 moments
    # per layer and token: 4h + 3q + 2kv + 4i + 7 adapted layers x r
    saved = (4 * 64 + 3 * 64 + 2 * 32 + 4 * 192 + 7 * 8) * 512 * 2 * 4
    assert _row(result, "activations (512 tokens, checkpointing off)")["host_bytes"] == saved
    assert _row(result, "freed temporaries the heap keeps")["host_bytes"] == int(saved * 0.8)
    # 8 fp32 tiles of 512 tokens x the whole 32,002 vocabulary, and the hidden states' fp32 gradient
    assert _row(result, "LM head tiles")["host_bytes"] == 8 * 512 * 32_002 * 4 + 512 * 64 * 4
    assert _row(result, "checkpoint files")["host_bytes"] == (models["spm-hermes"] / "model.safetensors").stat().st_size
    assert result["fits"] and result["host_bytes"] == max(p["host_bytes"] for p in result["phases"].values())


def test_qlora_weights_are_a_quarter_of_bf16(models, prepared, configs, tmp_path):
    """4-bit linear layers (with their absmax) are ~1/4 of bf16; the rest stays 16-bit. On a tiny
    model the planner's bytes are those of the model `finetune train` loads."""
    import bitsandbytes as bnb

    from finetune.train.model import load_model

    lora = _plan(CODE / "codellama-7b-lora-repo-fim.yaml", f"model.path={configs['7b']}")
    qlora = _plan(CODE / "codellama-7b-lora-repo-fim.yaml", f"model.path={configs['7b']}", "train.method=qlora",
                  "train.quantization={compute_dtype: bfloat16}")
    linear = qlora["parameters"]["quantizable"]
    assert linear == 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    bf16, nf4 = _row(lora, "weights (bf16)")["gpu_bytes"], _row(qlora, "weights (linear layers NF4")["gpu_bytes"]
    assert nf4 == int(linear * NF4_BYTES[True] + (lora["parameters"]["total"] - linear) * 2)
    assert 0.25 < nf4 / bf16 < 0.30  # the embeddings (2 x 131M) stay bf16

    train = Train(method="qlora", quantization={"compute_dtype": "float32"}, lora={"dropout": 0.0})
    recipe = make_recipe(models["spm-hermes"], prepared["spm-hermes"], tmp_path / "r", method="qlora",
                         quantization={"compute_dtype": "float32"})
    predicted = _row(plan(recipe, target("cpu"), Launch()), "weights (linear layers NF4")["host_bytes"]
    loaded = 0
    for p in load_model(str(models["spm-hermes"]), train, "fp32").parameters():
        loaded += p.numel() * p.element_size()
        if isinstance(p, bnb.nn.Params4bit):
            q = p.quant_state
            loaded += q.absmax.numel() * q.absmax.element_size() + q.state2.absmax.numel() * 4
    assert abs(predicted - loaded) / loaded < 0.01, (predicted, loaded)


def test_zero3_shards_over_the_gpus_and_deepspeed_agrees(configs):
    full = CODE / "codellama-34b-full-zero3-offload.yaml"
    z3 = {g: _plan(full, f"model.path={configs['34b']}", config=REPO / "accelerate_configs" / "zero3.yaml", gpus=g)
          for g in (4, 8)}
    for prefix in ("weights (bf16), sharded", "gradients (16-bit)", "fp32 gradients, master weights"):
        four, eight = _row(z3[4], prefix)["gpu_bytes"], _row(z3[8], prefix)["gpu_bytes"]
        assert abs(four - 2 * eight) <= 1, prefix
    P = z3[8]["parameters"]["total"]
    assert _row(z3[8], "fp32 gradients, master weights")["gpu_bytes"] == int(P * (4 + 4 + 8) / 8)
    assert _row(z3[8], "weights (bf16), whole on every rank")["phases"] == ["load"]
    # DeepSpeed's own figure for ZeRO-2 is exactly ours: 2 bytes of 16-bit weights + 18 / GPUs (16-bit
    # and fp32 gradients, fp32 master weights, Adam's two moments). Its ZeRO-3 figure, 4 x the largest
    # module + 18 / GPUs, leaves out the 16-bit weights that ZeRO-3 shards: 2 / GPUs less than ours.
    z2 = _plan(full, f"model.path={configs['34b']}", config=REPO / "accelerate_configs" / "zero2.yaml", gpus=8)
    assert z2["deepspeed"]["gpu_bytes"] == 2 * P + int(18 * P / 8)
    assert abs(z2["deepspeed"]["ours_gpu_bytes"] - z2["deepspeed"]["gpu_bytes"]) <= 2
    ds3 = z3[8]["deepspeed"]
    assert ds3["gpu_bytes"] == 4 * z3[8]["parameters"]["largest_module"] + int(18 * P / 8)
    assert abs(ds3["ours_gpu_bytes"] - ds3["gpu_bytes"] - 2 * P / 8) <= 3


def test_the_cheapest_change_is_the_first_that_fits_and_applying_it_fits(configs):
    fim = CODE / "codellama-7b-lora-repo-fim.yaml"
    seven = f"model.path={configs['7b']}"
    no_ckpt = _plan(fim, seven, "train.gradient_checkpointing=false", gpu="l40s")
    assert not no_ckpt["fits"] and no_ckpt["cheapest_change"]["change"] == "train.gradient_checkpointing=true"
    assert _plan(fim, seven, gpu="l40s")["fits"]
    # 24 GiB: checkpointing is on already and the batch is accumulated row by row: QLoRA is next.
    small = _plan(fim, seven, memory=24)
    assert not small["fits"] and small["cheapest_change"]["change"].startswith("train.method=qlora")
    assert _plan(fim, seven, "train.method=qlora", "train.quantization={compute_dtype: bfloat16}", memory=24)["fits"]
    # Unpacked rows: a smaller batch, the same effective batch, comes before QLoRA.
    rows = ["train.packing=false", "train.per_device_batch_size=8", "train.verify_samples=0"]
    sizes = {b: _plan(fim, seven, *rows, f"train.per_device_batch_size={b}")["per_gpu_bytes"] for b in (4, 8)}
    between = (sizes[4] + sizes[8]) / 2 / GIB
    batch = _plan(fim, seven, *rows, memory=between)
    assert batch["cheapest_change"]["change"] == "train.per_device_batch_size=4 train.gradient_accumulation_steps=8"
    assert _plan(fim, seven, *rows, "train.per_device_batch_size=4", "train.gradient_accumulation_steps=8",
                 memory=between)["fits"]
    # Full fine-tuning of 34B on 8 x 80 GB: DDP, ZeRO-2 and ZeRO-3 are too small; the optimizer on the host fits.
    big = _plan(CODE / "codellama-34b-full-zero3-offload.yaml", f"model.path={configs['34b']}", gpu="a100", gpus=8)
    assert big["cheapest_change"]["change"].startswith("ZeRO-3 with offload_optimizer_device: cpu")


def test_exit_codes_json_and_one_line_errors(configs, tmp_path, capsys):
    fim, seven = str(CODE / "codellama-7b-lora-repo-fim.yaml"), f"model.path={configs['7b']}"
    assert main(["plan", fim, seven, "--gpu", "h100", "--json", str(tmp_path / "plan.json")]) == 0
    out = capsys.readouterr().out
    assert "fits: " in out.splitlines()[-1] and "step time: ~" in out
    assert yaml.safe_load((tmp_path / "plan.json").read_text())["fits"] is True
    assert main(["plan", fim, seven, "--gpu-memory", "24"]) == 1
    assert "does not fit: " in capsys.readouterr().out
    with pytest.raises(FinetuneError, match="no config.json"):
        _plan(fim, f"model.path={tmp_path}")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    missing = subprocess.run([sys.executable, "-m", "finetune", "plan", str(tmp_path / "nope.yaml")], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == f"error: recipe {tmp_path / 'nope.yaml'} does not exist"


def _measured_against_planned(recipe: Recipe, folder) -> tuple[float, float]:
    """(peak RSS of `finetune train` on the recipe, in MiB; the plan's host peak for it, in MiB)."""
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe.model_dump()))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", CHILD, "train", str(path), "--no-progress"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    measured = float(re.search(r"PEAK_RSS_MB ([\d.]+)", run.stdout).group(1))
    return measured, plan(recipe, target("cpu"), Launch())["host_bytes"] / MIB


def test_host_prediction_within_25_percent_of_a_tiny_llama_run(models, prepared, tmp_path):
    recipe = make_recipe(models["spm-hermes"], prepared["spm-hermes"], tmp_path / "run", max_steps=2)
    measured, planned = _measured_against_planned(recipe, tmp_path)
    print(f"tiny Llama LoRA, CPU: measured peak RSS {measured:.0f} MiB, planned {planned:.0f} MiB")
    assert abs(planned - measured) / measured <= 0.25, (measured, planned)


@pytest.mark.slow
def test_host_prediction_within_25_percent_of_a_smollm2_lora_run(smollm2, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the recipe names data/sample/... relative to the repository
    # Two short steps: at 256 tokens most traces are too long (rejected), 7 samples remain.
    recipe = load_recipe(REPO / "recipes" / "smollm2" / "traces-lora.yaml",
                         [f"model.path={smollm2}", f"data.output_dir={tmp_path / 'data'}",
                          f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2", "data.max_seq_length=256",
                          "data.max_reject_fraction=0.97", "data.validation_fraction=0"], Recipe)
    measured, planned = _measured_against_planned(recipe, tmp_path)
    print(f"SmolLM2-135M LoRA, CPU: measured peak RSS {measured:.0f} MiB, planned {planned:.0f} MiB")
    assert abs(planned - measured) / measured <= 0.25, (measured, planned)


def test_step_time_by_hand(configs):
    """LoRA on Code Llama 7B with checkpointing: 4 FLOPs per frozen weight + 2 to recompute the
    forward, 6 per adapter weight, attention 16 x layers x width x seq; at 40% of an H100."""
    result = _plan(CODE / "codellama-7b-lora-repo-fim.yaml", f"model.path={configs['7b']}")
    matmul = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008) + 32016 * 4096  # the LM head multiplies, the lookup not
    flops = 6 * matmul + 6 * result["parameters"]["trainable"] + 16 * 32 * 4096 * 4096
    s = result["step_time"]
    assert s["flops_per_token"] == flops and s["tokens_per_step"] == 4096 * 4 * 4
    assert s["seconds"] == pytest.approx(flops * 65536 / (989.4e12 * 0.4))
