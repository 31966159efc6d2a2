"""What an export starts from, and its weights streamed one tensor at a time, adapter merged in.

A source is a training run folder (``run.json`` names the base model, the method and the
adapter or full model it saved), a judge run folder (its merged ``model/``), a model folder with
``--adapter``, a bare PEFT adapter folder
(its ``adapter_config.json`` names the base), or a model folder alone. QLoRA runs merge into the
*16-bit* base the recipe names: the 4-bit copy the adapter was trained against is a quantized
view of those weights, and re-quantizing a merged model from it would stack two roundings.

Merging happens per tensor in float32 as the tensor streams past: ``W + s * B @ A`` for LoRA
(``s = alpha / r``, or ``alpha / sqrt(r)`` for rsLoRA), the DoRA rescale ``m / ||W + s B A||``
row by row, and for Llama 4's fused expert parameters (PEFT ``target_parameters``) the per-expert
``B_e @ A_e``. Embedding rows an adapter trained for tokens the base lacks (PEFT
``trainable_token_indices``) replace those rows, the matrix grown to hold them. Only safetensors are read; a pickle checkpoint (``*.bin``, ``*.pt``) is refused
unless the caller trusts it, and even then it is opened with ``weights_only=True``.

Example::

    src = open_source(Path("runs/tiny-lora"))
    for name in src.names():
        tensor = src.tensor(name)      # float32, merged, nothing else held
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from finetune import FinetuneError

_LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+?)(?P<wrap>(\.base_layer)*)\.lora_(?P<part>A|B)\.weight$")
_MAGNITUDE_KEY = re.compile(r"^base_model\.model\.(?P<module>.+?)\.lora_magnitude_vector(\.weight)?$")
_TOKENS_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.token_adapter\.trainable_tokens_delta$")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


@dataclass
class Source:
    """A base model folder, an optional PEFT adapter, and where they came from."""

    model: Path
    adapter: Path | None = None
    run: Path | None = None
    run_info: dict = field(default_factory=dict)
    trust_pickle: bool = False
    config: dict = field(default_factory=dict)
    _shapes: dict = field(default_factory=dict)      # name -> shape, base weights
    _files: dict = field(default_factory=dict)       # name -> file holding it
    _merges: dict = field(default_factory=dict)      # base name -> [(kind, tensors...)]
    _replaced: dict = field(default_factory=dict)    # base name -> full tensor saved in the adapter
    lora_pairs: dict = field(default_factory=dict)   # base name -> (A, B, scale, kind: lora|dora|experts)
    new_rows: dict = field(default_factory=dict)     # embedding name -> token ids whose rows the adapter holds

    @property
    def method(self) -> str:
        if self.run_info:
            return self.run_info["recipe"]["train"]["method"]
        if self.adapter is None:
            return "none"
        return "dora" if self.adapter_config.get("use_dora") else "lora"

    @property
    def adapter_config(self) -> dict:
        return json.loads((self.adapter / "adapter_config.json").read_text()) if self.adapter else {}

    @property
    def tokenizer_dir(self) -> Path:
        """The tokenizer (and chat template) the data was rendered with: the run's, else the adapter's
        or the model's own."""
        for folder in ((self.run / "tokenizer") if self.run else None, self.adapter, self.model):
            if folder is not None and (folder / "tokenizer_config.json").exists():
                return folder
        raise FinetuneError(f"no tokenizer in {self.run or self.adapter or self.model}")

    @property
    def arch(self) -> str:
        kind = self.config.get("model_type")
        if kind == "llama":
            return "llama"
        if kind == "llama4_text":
            return "llama4"
        raise FinetuneError(f"{self.model}/config.json: model_type {kind!r} is not a Llama-family text model "
                            "(llama or llama4_text); export supports those two")

    def names(self) -> list[str]:
        """Base weight names in file order."""
        return list(self._shapes)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._replaced[name].shape) if name in self._replaced else self._shapes[name]

    def tensor(self, name: str) -> torch.Tensor:
        """The weight ``name`` with the adapter merged in: float32 where a merge happened (the
        arithmetic is float32), else as stored, so untouched weights cost no conversion."""
        w = self._replaced[name] if name in self._replaced else _read(self._files[name], name)
        for merge in self._merges.get(name, ()):
            w = merge(w.float())
        if not _finite(w):
            bad = int((~torch.isfinite(w)).sum())
            raise FinetuneError(f"{name}: {bad} NaN/inf values after merging {self.adapter or self.model}; "
                                "the adapter or the base weights are corrupt")
        return w


def _finite(w: torch.Tensor) -> bool:
    """NaN/inf check in 16M-element slices: ``isfinite`` on a whole 16-bit embedding allocates
    float32 temporaries of twice its size, which measured as the export's peak memory."""
    flat = w.reshape(-1)
    return all(bool(torch.isfinite(chunk).all()) for chunk in flat.split(1 << 24))


def _read(path: Path, name: str) -> torch.Tensor:
    """One tensor from one file. safetensors hands back a tensor backed by the file's memory map;
    opening the file per tensor means nothing but that tensor keeps pages mapped, so pages read
    so far leave memory with it."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as fh:
            return fh.get_tensor(name)
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return state[name].clone()


def _weight_files(folder: Path, trust_pickle: bool) -> list[Path]:
    safe = sorted(folder.glob("*.safetensors"))
    if safe:
        return safe
    pickles = sorted(p for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES and p.name != "training_args.bin")
    if pickles and not trust_pickle:
        raise FinetuneError(f"{folder} holds only pickle weights ({pickles[0].name}); loading a pickle can run "
                            "arbitrary code. Convert it to safetensors, or pass --trust-pickle if you trust its origin")
    if not pickles:
        raise FinetuneError(f"{folder} holds no model weights (*.safetensors)")
    return pickles


def _index(folder: Path, trust_pickle: bool) -> tuple[dict, dict]:
    shapes, files = {}, {}
    for f in _weight_files(folder, trust_pickle):
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), "pt") as fh:
                for key in fh.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    shapes[key], files[key] = tuple(fh.get_slice(key).get_shape()), f
        else:
            for key, t in torch.load(f, map_location="cpu", weights_only=True, mmap=True).items():
                shapes[key], files[key] = tuple(t.shape), f
    return shapes, files


def open_source(path: Path, adapter: Path | None = None, trust_pickle: bool = False) -> Source:
    """Resolve ``path`` (run folder, model folder, or adapter folder) into a :class:`Source`."""
    path = Path(path)
    if not path.is_dir():
        raise FinetuneError(f"{path} is not a folder: pass a training run, a model folder or an adapter folder")
    run, run_info = None, {}
    if adapter is not None and ((path / "run.json").exists() or (path / "adapter_config.json").exists()):
        raise FinetuneError(f"--adapter goes with a model folder; {path} already names its adapter "
                            "(a run folder or an adapter folder)")
    if (path / "run.json").exists():
        run, run_info = path, json.loads((path / "run.json").read_text())
        out = Path(run_info["output"])
        out = out if out.is_absolute() and out.exists() else path / out.name
        base = Path(run_info["recipe"]["model"]["path"])
        if run_info["recipe"]["train"]["method"] == "full":
            model, adapter = out, None
        else:
            model, adapter = base, out
    elif (path / "judge.json").exists():  # a judge run: its merged model/ folder
        model = path / "model"
    elif (path / "adapter_config.json").exists():
        adapter = path
        model = Path(json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path") or "")
    else:
        model = path
    if not (model / "config.json").exists():
        raise FinetuneError(f"base model folder {model} not found or has no config.json (named by "
                            f"{'run.json recipe model.path' if run else 'adapter_config.json base_model_name_or_path' if adapter else 'you'}); "
                            "run the export from the folder training ran in, or fix that path")
    if adapter is not None and not (adapter / "adapter_config.json").exists():
        raise FinetuneError(f"adapter folder {adapter} not found or has no adapter_config.json")
    src = Source(model=model, adapter=adapter, run=run, run_info=run_info, trust_pickle=trust_pickle,
                 config=json.loads((model / "config.json").read_text()))
    src.arch  # noqa: B018 (refuses unsupported architectures before any work)
    src._shapes, src._files = _index(model, trust_pickle)
    if adapter is not None:
        _attach_adapter(src)
    return src


def _attach_adapter(src: Source) -> None:
    """Turn the adapter's tensors into per-weight merge steps (everything is checked here, so a
    mismatch fails before any output is written)."""
    from safetensors.torch import load_file

    cfg = src.adapter_config
    if cfg.get("peft_type", "LORA") != "LORA":
        raise FinetuneError(f"{src.adapter}: peft_type {cfg.get('peft_type')} cannot be merged; export handles LoRA/DoRA")
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise FinetuneError(f"{src.adapter}: per-module rank_pattern/alpha_pattern adapters are not supported by export")
    files = sorted(src.adapter.glob("adapter_model*.safetensors"))
    if not files:
        raise FinetuneError(f"{src.adapter} holds no adapter_model.safetensors")
    tensors = {}
    for f in files:
        tensors.update(load_file(str(f)))
    alpha, use_rslora = float(cfg["lora_alpha"]), bool(cfg.get("use_rslora"))

    def scale(rank: int) -> float:
        return alpha / math.sqrt(rank) if use_rslora else alpha / rank

    pairs: dict[tuple[str, str], dict] = {}
    magnitudes = {}
    for key, t in tensors.items():
        if m := _LORA_KEY.match(key):
            pairs.setdefault((m["module"], m["wrap"]), {})[m["part"]] = t.float()
        elif m := _MAGNITUDE_KEY.match(key):
            magnitudes[m["module"]] = t.float()
        elif m := _TOKENS_KEY.match(key):
            _attach_rows(src, m["module"], t, cfg.get("trainable_token_indices"))
        elif key.startswith("base_model.model.") and key[len("base_model.model."):] in src._shapes:
            src._replaced[key[len("base_model.model."):]] = t  # modules_to_save: a full trained copy
        else:
            raise FinetuneError(f"{src.adapter}: tensor {key} matches no weight of {src.model}; "
                                "the adapter was trained on a different base model")
    for (module, wrap), ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise FinetuneError(f"{src.adapter}: {module} has lora_{'A' if 'A' in ab else 'B'} without its partner")
        a, b = ab["A"], ab["B"]
        if f"{module}.weight" in src._shapes and not wrap:
            name = f"{module}.weight"
            if (b.shape[0], a.shape[1]) != src._shapes[name]:
                raise FinetuneError(f"{src.adapter}: {module} LoRA shapes {tuple(b.shape)}x{tuple(a.shape)} do not "
                                    f"fit {name} {src._shapes[name]}; wrong base model")
            s, magnitude = scale(a.shape[0]), magnitudes.pop(module, None)
            src._merges.setdefault(name, []).append(_linear_merge(a, b, s, magnitude))
            src.lora_pairs[name] = (a, b, s, "lora" if magnitude is None else "dora")
            continue
        name = _expert_param(src, module, a, b)
        experts = src._shapes[name][0]
        src._merges.setdefault(name, []).append(_expert_merge(a, b, scale(a.shape[0] // experts), experts))
        src.lora_pairs[name] = (a, b, scale(a.shape[0] // experts), "experts")
    if magnitudes:
        raise FinetuneError(f"{src.adapter}: DoRA magnitudes for {sorted(magnitudes)[:2]} have no LoRA pair")


def _attach_rows(src: Source, module: str, rows: torch.Tensor, indices) -> None:
    """Trained embedding rows (PEFT trainable tokens): the weight grows to hold every index, and
    the rows replace the base's (they are whole rows, not deltas, whatever PEFT calls them)."""
    name = f"{module}.weight"
    ids = indices.get(module.rsplit(".", 1)[-1]) if isinstance(indices, dict) else indices
    if name not in src._shapes or not ids or len(ids) != rows.shape[0] or src._shapes[name][1:] != tuple(rows.shape[1:]):
        raise FinetuneError(f"{src.adapter}: trained token rows for {module} ({tuple(rows.shape)}) fit no embedding of "
                            f"{src.model} with trainable_token_indices {indices}; wrong base model")
    grown = (max(src._shapes[name][0], max(ids) + 1), *src._shapes[name][1:])
    src._shapes[name] = grown
    src.new_rows[name] = list(ids)
    index = torch.tensor(ids, dtype=torch.long)

    def merge(w: torch.Tensor) -> torch.Tensor:
        if w.shape[0] < grown[0]:  # rows no index names start where training starts them: the mean
            w = torch.cat([w, w.mean(0, keepdim=True).expand(grown[0] - w.shape[0], *w.shape[1:])])
        w = w.clone()
        w[index] = rows.float()
        return w

    src._merges.setdefault(name, []).append(merge)


def _expert_param(src: Source, module: str, a: torch.Tensor, b: torch.Tensor) -> str:
    """The fused 3-D parameter of ``module`` (experts x d1 x d2) a PEFT ``target_parameters`` pair
    belongs to, found by shape: B is (d1, r*E), A is (E*r, d2)."""
    for name, shape in src._shapes.items():
        if (name.startswith(module + ".") and "." not in name[len(module) + 1:] and len(shape) == 3
                and shape[1:] == (b.shape[0], a.shape[1]) and a.shape[0] % shape[0] == 0):
            return name
    raise FinetuneError(f"{src.adapter}: LoRA weights for {module} fit no weight of {src.model}; wrong base model")


def _linear_merge(a, b, s, magnitude):
    def merge(w: torch.Tensor) -> torch.Tensor:
        w = w + s * (b @ a)
        if magnitude is not None:  # DoRA: each output row rescaled to its trained magnitude
            w = w * (magnitude / torch.linalg.norm(w, dim=1)).unsqueeze(1)
        return w
    return merge


def _expert_merge(a, b, s, experts):
    def merge(w: torch.Tensor) -> torch.Tensor:
        a_e = a.reshape(experts, -1, a.shape[-1])          # E x r x d2
        b_e = b.reshape(b.shape[0], -1, experts)           # d1 x r x E
        return w + s * torch.einsum("ore,erd->eod", b_e, a_e)
    return merge
