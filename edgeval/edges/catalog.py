"""The model catalog (models.toml, built in and the user's), and model references like `qwen3-8b:Q4_K_M`."""

from __future__ import annotations

import dataclasses
import difflib
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from gguf import LlamaFileType

from edgeval.core.errors import EdgevalError, ModelFileError
from edgeval.core.memory import Architecture, Repack, RepackRule
from edgeval.core.paths import edgeval_home
from edgeval.core.prompts import NON_THINKING_SAMPLING, THINKING_SAMPLING, Sampling
from edgeval.core.quants import WeightQuant
from edgeval.edges.gguf_info import GGUFInfo, read_local

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Bytes a Qwen3 GGUF spends on its header (the 151,936-entry tokenizer, merges, chat template): file size
# minus tensor bytes, measured on the official Qwen3-0.6B-Q8_0.gguf (exact for 0.6B/1.7B, ~5 kB low above).
QWEN3_HEADER_BYTES = 5_951_136

# Bits per parameter of the dense Qwen3 GGUF files at each quantization ((file size − header) × 8 / params, Qwen3-8B's
# files in this catalog): the estimate for a catalog file whose size is not listed.
BITS_PER_PARAM: dict[WeightQuant, float] = {
    WeightQuant.BF16: 16.0, WeightQuant.F16: 16.0, WeightQuant.Q8_0: 8.5, WeightQuant.Q6_K: 6.563,
    WeightQuant.Q5_K_M: 5.709, WeightQuant.Q5_0: 5.582, WeightQuant.Q4_K_M: 4.905, WeightQuant.Q4_0: 4.625,
    WeightQuant.Q3_K_M: 4.022, WeightQuant.Q2_K: 3.2,
    # i-quants, not in the Qwen3-8B set above: tensor bytes × 8 / params of unsloth's Qwen3.5-27B files as a
    # third-party listing of their tensor directories gives them (no Hub here; 26.9B parameters, untied, so the
    # embeddings weigh little): IQ4_XS blocks are 4.25 bpw and IQ4_NL 4.5 (Q4_0's size), IQ3_XXS 3.06, each plus
    # the quantizer's usual mix (output at Q6_K, some attention and FFN-down tensors a type up, f32 norms and
    # convolutions) — 4.46, 4.67 and 3.42 against 4.98 for the same listing's Q4_K_M.
    WeightQuant.IQ4_XS: 4.46, WeightQuant.IQ4_NL: 4.67, WeightQuant.IQ3_XXS: 3.42,
}  # fmt: skip
# Below 8 bits the quantizer stores tied token embeddings (also the output projection) at Q6_K: 6.5625 bits.
TIED_EMBEDDING_BITS = 6.5625
THINKING_MODES = ("hybrid", "always", "never")


# Qwen's recommended sampling per architecture generation, by thinking on/off. A model's `generation` is its
# architecture generation: Qwen3.6 is Qwen3.5's architecture (llama.cpp's qwen35 and qwen35moe), its template and its
# sampling advice, so it is generation "qwen3.5" and `--family qwen3.5` includes it.
GENERATIONS: dict[str, dict[bool, Sampling]] = {
    # Qwen3 model cards: thinking 0.6/0.95/20, non-thinking 0.7/0.8/20, min_p 0; no presence penalty by default.
    "qwen3": {True: THINKING_SAMPLING, False: NON_THINKING_SAMPLING},
    # Qwen3.5 model cards: thinking 1.0/0.95/20 with presence penalty 1.5, non-thinking 0.7/0.8/20/1.5; thinking
    # on by default through the template (enable_thinking), no /think switches.
    "qwen3.5": {True: Sampling(1.0, 0.95, 20, 0.0, presence_penalty=1.5),
                False: Sampling(0.7, 0.8, 20, 0.0, presence_penalty=1.5)},
}  # fmt: skip
FAMILIES = (*GENERATIONS, "all")


class CatalogError(EdgevalError):
    """A catalog file that cannot be read, or an entry missing what it needs."""

    hint = "fix the catalog file named in the message (format: see the README's models.toml section)"


class UnknownModelError(EdgevalError):
    """A model reference that names nothing in the catalog."""

    def __init__(self, ref: str, suggestions: list[str]) -> None:
        near = f" (closest: {', '.join(suggestions)})" if suggestions else ""
        super().__init__(f"unknown model '{ref}'{near}", hint="run `edgeval models` to list the catalog")
        self.ref = ref
        self.suggestions = suggestions


@dataclass(frozen=True)
class ModelFile:
    """One quantization of a model: a Hub file (repo + file, maybe in parts) or a local path."""

    quant: WeightQuant
    repo: str | None = None
    file: str | None = None
    parts: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None
    revision: str | None = None
    path: Path | None = None

    @property
    def local(self) -> bool:
        """Whether the file is a local path rather than a Hub file."""
        return self.path is not None

    @property
    def files(self) -> tuple[str, ...]:
        """The Hub file names to download (several for a split GGUF)."""
        return self.parts or ((self.file,) if self.file else ())

    @property
    def unchecked(self) -> bool:
        """A Hub file a download of which cannot be checked: the catalog has no published sha256 for it (one sha256
        cannot vouch for the parts of a split file either)."""
        return not self.local and (self.sha256 is None or len(self.files) > 1)


@dataclass(frozen=True)
class Model:
    """A model size: its architecture numbers and the quantizations the catalog knows."""

    name: str
    title: str
    params: int
    arch: Architecture
    files: tuple[ModelFile, ...]
    active_params: int | None = None  # mixture of experts: parameters one token uses (None: all of them)
    n_expert: int = 0  # mixture of experts: experts per layer, all resident
    n_expert_used: int = 0  # … of which each token uses this many
    thinking: str = "hybrid"  # "always" (Qwen3-2507 Thinking), "never" (-2507 Instruct), or as asked
    generation: str = "qwen3"  # a key of GENERATIONS: the architecture generation (`--family`)

    def file(self, quant: WeightQuant) -> ModelFile | None:
        """The entry for one quantization."""
        return next((f for f in self.files if f.quant == quant), None)

    def thinks(self, requested: bool) -> bool:
        """Whether a run reasons: the model's fixed mode, or the one asked for when it has both."""
        return {"always": True, "never": False}.get(self.thinking, requested)

    def sampling(self, thinking: bool) -> Sampling:
        """Qwen's recommended sampler settings for this model's generation in the mode it runs."""
        return GENERATIONS[self.generation][self.thinks(thinking)]

    def recommended_sampling(self, thinking: bool) -> dict[str, float]:
        """The same as a dict (a copy: temperature, top_p, top_k, min_p, presence_penalty)."""
        return dataclasses.asdict(self.sampling(thinking))


@dataclass(frozen=True)
class ModelRef:
    """One resolved model file: what a configuration runs."""

    model: Model
    file: ModelFile
    header: GGUFInfo | None = None  # the parsed header, for local files

    @property
    def label(self) -> str:
        """`qwen3-8b:Q4_K_M`."""
        return f"{self.model.name}:{self.file.quant.value}"

    @property
    def weight_bytes(self) -> int:
        """Tensor bytes: exact from a read header, else the catalog's file size less Qwen3's header."""
        if self.header is not None:
            return self.header.weight_bytes
        if self.file.size is None:
            bits = BITS_PER_PARAM.get(self.file.quant)
            if bits is None:
                raise CatalogError(f"{self.label} has no size in the catalog")
            arch = self.model.arch
            embd = arch.n_vocab * arch.n_embd if arch.tied_embeddings and self.file.quant.bits < 8 else 0
            return int(((self.model.params - embd) * bits + embd * TIED_EMBEDDING_BITS) / 8)
        return max(self.file.size - QWEN3_HEADER_BYTES, 0)

    @property
    def embd_bytes(self) -> int:
        """Token-embedding bytes (they stay on the host under GPU offload); estimated from the weights."""
        if self.header is not None:
            return self.header.embd_bytes
        share = self.model.arch.n_vocab * self.model.arch.n_embd / max(self.model.params, 1)
        return int(self.weight_bytes * share)

    @property
    def expert_bytes(self) -> int:
        """A mixture of experts' expert-weight bytes (0 for a dense model): exact from a read header; from the
        catalog, the weights' share of expert parameters (3 matrices of n_embd × the expert width, per expert and
        layer; the expert width is the active FFN width over the experts used)."""
        if self.header is not None:
            return self.header.expert_bytes
        arch = self.model.arch
        if not arch.n_expert or not arch.n_expert_used:
            return 0
        expert_params = arch.n_layer * arch.n_expert * 3 * arch.n_embd * (arch.ffn_width // arch.n_expert_used)
        return int(self.weight_bytes * expert_params / max(self.model.params, 1))

    def repack(self, types: Mapping[str, tuple[RepackRule, ...]], *, tied_copy: bool = True) -> Repack:
        """What llama.cpp repacks of this file (`types`: `memory.repacked_types`): exact from a read header; from
        the catalog, the tied output copy (when `tied_copy`) by the quantizer's rule and, as an upper bound, every
        matrix weight beside the embeddings when the file's main type repacks (layout overheads of a few % left
        out)."""
        if self.header is not None:
            return self.header.repack(types, tied_copy=tied_copy)
        quant = self.file.quant
        tied = tied_copy and self.model.arch.tied_embeddings
        copy = self.embd_bytes if tied and quant.tied_output_type in types else 0
        matrices = self.weight_bytes - self.embd_bytes if quant.main_tensor_type in types else 0
        return Repack(repacked_bytes=matrices + copy, source_bytes=matrices, copy_bytes=copy)


def _quant(value: object, where: str) -> WeightQuant:
    try:
        return WeightQuant(str(value).upper())
    except ValueError:
        names = ", ".join(q.value for q in WeightQuant)
        raise CatalogError(f"{where}: unknown quantization '{value}' (known: {names})") from None


def quant_of(info: GGUFInfo) -> WeightQuant:
    """The weight quantization a GGUF header declares (`general.file_type`)."""
    raw = info.get("general.file_type")
    try:
        name = LlamaFileType(int(raw)).name if isinstance(raw, int) else ""
    except ValueError:
        name = ""
    name = name.removeprefix("MOSTLY_").removeprefix("ALL_")
    try:
        return WeightQuant(name)
    except ValueError:
        return WeightQuant.F16 if not name else _guess_from_types(info)


def _guess_from_types(info: GGUFInfo) -> WeightQuant:
    dominant = max(info.bytes_by_type.items(), key=lambda kv: kv[1])[0] if info.bytes_by_type else "F16"
    return {"Q8_0": WeightQuant.Q8_0, "Q4_0": WeightQuant.Q4_0, "BF16": WeightQuant.BF16}.get(dominant, WeightQuant.F16)


def model_from_header(info: GGUFInfo, name: str, path: Path) -> Model:
    """A catalog model describing one local GGUF file."""
    file = ModelFile(quant=quant_of(info), path=path, size=path.stat().st_size)
    arch = info.architecture()
    return Model(name=name, title=str(info.get("general.name", name)), params=info.n_params,
                 arch=arch, files=(file,), generation=generation_of(arch))  # fmt: skip


def generation_of(arch: Architecture) -> str:
    """The generation a file's architecture belongs to, for a model the catalog does not describe."""
    return "qwen3.5" if arch.hybrid else "qwen3"


def in_family(refs: Iterable[ModelRef], family: str) -> list[ModelRef]:
    """The references of one generation (`all`: every one)."""
    return [r for r in refs if family == "all" or r.model.generation == family]


_MAX_COUNT = 1 << 62  # params and sizes; widths, heads and layers are far smaller but any positive count is read


def _count(entry: dict[str, Any], key: str, where: str, default: int | None = None, low: int = 1) -> int:
    """A whole number from an entry, checked: not text, not a boolean, not NaN, from `low` up (`default`: None
    when the key is required)."""
    if key not in entry:
        if default is None:
            raise CatalogError(f"{where}: missing '{key}' (or give a local `path` to read it from)")
        return default
    value = entry[key]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CatalogError(f"{where}: {key} = {value!r} is not a whole number")
    if not low <= value <= _MAX_COUNT:
        raise CatalogError(f"{where}: {key} = {value} is out of range (at least {low})")
    return value


def _text(entry: dict[str, Any], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        raise CatalogError(f"{where}: {key} = {value!r} is not text")
    return value


HYBRID_KEYS = ("full_attention_interval", "linear_k_heads", "linear_v_heads", "linear_head_dim", "conv_kernel")


def _hybrid_from(entry: dict[str, Any], where: str, n_layer: int) -> dict[str, int]:
    """A hybrid's recurrent layers and state sizes from its linear-attention shape, by llama.cpp's formulas:
    layer i is recurrent when (i+1) % interval ≠ 0; per layer and sequence r = (conv − 1) × (d_inner + 2 × k_heads
    × head_dim) and s = head_dim × d_inner f32 values, d_inner = v_heads × head_dim (none for other models)."""
    if not any(key in entry for key in HYBRID_KEYS):
        return {}
    interval = _count(entry, "full_attention_interval", where)
    k_heads, v_heads = _count(entry, "linear_k_heads", where), _count(entry, "linear_v_heads", where)
    head_dim, conv = _count(entry, "linear_head_dim", where), _count(entry, "conv_kernel", where)
    d_inner = v_heads * head_dim
    return {
        "recurrent_layers": sum(1 for i in range(n_layer) if (i + 1) % interval),
        "state_r": (conv - 1) * (d_inner + 2 * k_heads * head_dim),
        "state_s": head_dim * d_inner,
        "linear_v_heads": v_heads,
        "conv_kernel": conv,
    }


def _arch_from(entry: dict[str, Any], where: str) -> Architecture:
    n_head = _count(entry, "n_head", where)
    head_dim = _count(entry, "head_dim", where, max(1, _count(entry, "n_embd", where) // n_head))
    n_expert = _count(entry, "n_expert", where, 0, low=0)
    n_layer = _count(entry, "n_layer", where)
    return Architecture(
        n_layer=n_layer,
        n_embd=_count(entry, "n_embd", where),
        n_head=n_head,
        n_head_kv=_count(entry, "n_head_kv", where, n_head),
        head_dim_k=head_dim,
        head_dim_v=head_dim,
        n_ff=_count(entry, "n_ff", where, low=0),
        n_vocab=_count(entry, "n_vocab", where),
        n_ctx_train=_count(entry, "n_ctx_train", where),
        tied_embeddings=bool(entry.get("tied_embeddings", False)),
        n_expert=n_expert,
        n_expert_used=min(n_expert, _count(entry, "n_expert_used", where, 0, low=0)),
        n_ff_exp=_count(entry, "n_ff_exp", where, 0, low=0),
        n_ff_shexp=_count(entry, "n_ff_shexp", where, 0, low=0),
        **_hybrid_from(entry, where, n_layer),
    )


def _file_from(entry: object, where: str, base: Path) -> ModelFile:
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: a file entry is {entry!r}, not a table ([[models.NAME.files]])")
    quant = _quant(entry.get("quant"), where)
    if "path" in entry:
        path = Path(str(_text(entry, "path", where))).expanduser()
        return ModelFile(quant=quant, path=path if path.is_absolute() else base / path)
    if "repo" not in entry or "file" not in entry:
        raise CatalogError(f"{where}: a file entry needs `repo` and `file`, or a local `path`")
    parts = entry.get("parts", [])
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        raise CatalogError(f"{where}: parts = {parts!r} is not a list of file names")
    sha256 = _text(entry, "sha256", where)
    return ModelFile(
        quant=quant, repo=_text(entry, "repo", where), file=_text(entry, "file", where), parts=tuple(parts),
        size=_count(entry, "size", where, low=0) if "size" in entry else None,
        sha256=sha256.lower() if sha256 else None, revision=_text(entry, "revision", where),
    )  # fmt: skip


def _generation(entry: dict[str, Any], name: str, where: str, arch: Architecture) -> str:
    generation = str(entry.get("generation", generation_of(arch)))
    if generation not in GENERATIONS:
        raise CatalogError(f"{where}: model '{name}' has generation = '{generation}' (use {', '.join(GENERATIONS)})")
    return generation


def _model_from(name: str, entry: object, where: str, base: Path) -> Model:
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: model '{name}' is {entry!r}, not a table ([models.{name}])")
    listed = entry.get("files", [])
    if not isinstance(listed, list):
        raise CatalogError(f"{where}: model '{name}' has files = {listed!r}, not a list of tables")
    files = tuple(_file_from(f, f"{where} [{name}]", base) for f in listed)
    if not files:
        raise CatalogError(f"{where}: model '{name}' has no files")
    arch_keys = {"n_layer", "n_embd", "n_head", "n_ff", "n_vocab", "n_ctx_train"}
    local = next((f.path for f in files if f.path is not None), None)
    title = _text(entry, "title", where) or name
    if not arch_keys <= entry.keys() and local is not None:
        # A local model: its header has the facts the entry left out.
        header = read_local(local)
        params = _count(entry, "params", f"{where} [{name}]", header.n_params)
        arch = header.architecture()
        return Model(name, title, params, arch, files, generation=_generation(entry, name, where, arch))
    if "params" not in entry:
        raise CatalogError(f"{where}: model '{name}' needs `params`")
    thinking = str(entry.get("thinking", "hybrid"))
    if thinking not in THINKING_MODES:
        raise CatalogError(f"{where}: model '{name}' has thinking = '{thinking}' (use {', '.join(THINKING_MODES)})")
    here = f"{where} [{name}]"
    arch = _arch_from(entry, here)
    generation = _generation(entry, name, where, arch)
    return Model(
        name, title, _count(entry, "params", here), arch, files,
        active_params=_count(entry, "active_params", here) if "active_params" in entry else None,
        n_expert=_count(entry, "n_expert", here, 0, low=0), n_expert_used=_count(entry, "n_expert_used", here, 0, low=0),
        thinking=thinking, generation=generation,
    )  # fmt: skip


def builtin_catalog_path() -> Path:
    """models.toml shipped with edgeval (inside the package when installed, at the repository root in a clone)."""
    package = Path(__file__).resolve().parents[1]  # edgeval/: the wheel puts models.toml there
    packaged = package / "models.toml"
    return packaged if packaged.exists() else package.parent / "models.toml"


def user_catalog_path() -> Path:
    """The user's own catalog, read on top of the built-in one when it exists."""
    return edgeval_home() / "models.toml"


def read_catalog_file(path: Path) -> dict[str, Model]:
    """The models one catalog file defines."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"catalog file {path} does not exist", hint="check the --catalog path") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not UTF-8 text (byte {exc.start})", hint="save the file as UTF-8") from None
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise CatalogError(f"{path}: `models` must be a table of models")
    twins = sorted(name for name in models if any(n != name and n.lower() == name.lower() for n in models))
    if twins:
        raise CatalogError(f"{path}: {' and '.join(map(repr, twins))} differ only in case, and names match "
                           "case-insensitively: rename one")  # fmt: skip
    return {name: _model_from(name, entry, str(path), path.parent) for name, entry in models.items()}


@dataclass(frozen=True)
class Catalog:
    """All models edgeval knows: built-in entries, then the user's catalog, then --catalog files."""

    models: dict[str, Model]  # by lower-case name: names match case-insensitively, shown as the catalog spells them

    @classmethod
    def load(cls, extra: Iterable[Path] = (), *, builtin: bool = True) -> Catalog:
        """Read the built-in catalog, the user catalog (if present) and any extra files, later ones winning."""
        models: dict[str, Model] = {}
        sources = [builtin_catalog_path()] if builtin else []
        if user_catalog_path().exists():
            sources.append(user_catalog_path())
        for path in [*sources, *extra]:
            models.update({name.lower(): model for name, model in read_catalog_file(path).items()})
        return cls(models)

    @cached_property
    def labels(self) -> list[str]:
        """Every `model:QUANT` reference."""
        return [f"{m.name}:{f.quant.value}" for m in self.models.values() for f in m.files]

    def resolve(self, ref: str) -> list[ModelRef]:
        """`qwen3-8b:Q4_K_M` → one file; `qwen3-8b` → all its files; a path to a .gguf → that file."""
        path = Path(ref).expanduser()
        if ref.endswith(".gguf") or path.is_file():
            info = read_local(path)
            local = model_from_header(info, path.stem, path)
            return [ModelRef(local, local.files[0], info)]
        name, _, quant = ref.partition(":")
        model = self.models.get(name.lower())
        if model is not None and not quant:
            return [self._ref(model, f) for f in model.files]
        if model is not None:
            wanted = WeightQuant(quant.upper()) if quant.upper() in WeightQuant.__members__ else None
            file = model.file(wanted) if wanted else None
            if file is not None:
                return [self._ref(model, file)]
        if path.is_dir():
            raise ModelFileError(path, "is a folder, not a .gguf file", hint="name the .gguf file inside it")
        spelled = {n.lower(): n for n in [*(m.name for m in self.models.values()), *self.labels]}
        close = [spelled[n] for n in difflib.get_close_matches(ref.lower(), spelled, n=3, cutoff=0.5)]
        raise UnknownModelError(ref, close)

    def resolve_all(self, refs: Iterable[str]) -> list[ModelRef]:
        """Resolve several references, dropping repeats, keeping order."""
        seen: dict[str, ModelRef] = {}
        for ref in refs:
            for resolved in self.resolve(ref):
                seen.setdefault(resolved.label, resolved)
        return list(seen.values())

    def everything(self) -> list[ModelRef]:
        """Every file of every model."""
        return [self._ref(m, f) for m in self.models.values() for f in m.files]

    @staticmethod
    def _ref(model: Model, file: ModelFile) -> ModelRef:
        header = read_local(file.path) if file.path is not None else None
        return ModelRef(model, file, header)
