"""Names and storage facts of weight quantizations (llama.cpp file types) and KV-cache types."""

from __future__ import annotations

from enum import Enum

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType


class WeightQuant(str, Enum):
    """A llama.cpp model file type, named as in GGUF file names (`Qwen3-8B-Q4_K_M.gguf`)."""

    F32 = "F32"
    F16 = "F16"
    BF16 = "BF16"
    Q8_0 = "Q8_0"
    Q6_K = "Q6_K"
    Q5_K_M = "Q5_K_M"
    Q5_K_S = "Q5_K_S"
    Q5_0 = "Q5_0"
    Q4_K_M = "Q4_K_M"
    Q4_K_S = "Q4_K_S"
    Q4_0 = "Q4_0"
    IQ4_NL = "IQ4_NL"
    IQ4_XS = "IQ4_XS"
    IQ3_XXS = "IQ3_XXS"  # unsloth names its files UD-IQ3_XXS (a dynamic mix); the file type is llama.cpp's IQ3_XXS
    Q3_K_L = "Q3_K_L"
    Q3_K_M = "Q3_K_M"
    Q3_K_S = "Q3_K_S"
    Q2_K = "Q2_K"

    @property
    def bits(self) -> int:
        """Nominal precision class (16, 8, 6, 5, 4, 3 or 2 bits), the axis the study plots."""
        return _NOMINAL_BITS[self]

    @property
    def main_tensor_type(self) -> str:
        """The GGML type most of the file's matrix weights have (mixes like Q4_K_M keep some at a higher type)."""
        return _MAIN_TYPE.get(self, self.value)

    @property
    def tied_output_type(self) -> str:
        """The GGML type llama.cpp's quantizer gives tied token embeddings (they are also the output projection):
        Q6_K below 8 bits, Q8_0 at Q8_0, unchanged at 16/32 bits."""
        return self.value if self.bits >= 8 else "Q6_K"


_NOMINAL_BITS = {
    WeightQuant.F32: 32,
    WeightQuant.F16: 16,
    WeightQuant.BF16: 16,
    WeightQuant.Q8_0: 8,
    WeightQuant.Q6_K: 6,
    WeightQuant.Q5_K_M: 5,
    WeightQuant.Q5_K_S: 5,
    WeightQuant.Q5_0: 5,
    WeightQuant.Q4_K_M: 4,
    WeightQuant.Q4_K_S: 4,
    WeightQuant.Q4_0: 4,
    WeightQuant.IQ4_NL: 4,
    WeightQuant.IQ4_XS: 4,
    WeightQuant.IQ3_XXS: 3,
    WeightQuant.Q3_K_L: 3,
    WeightQuant.Q3_K_M: 3,
    WeightQuant.Q3_K_S: 3,
    WeightQuant.Q2_K: 2,
}

_MAIN_TYPE = {
    WeightQuant.Q5_K_M: "Q5_K",
    WeightQuant.Q5_K_S: "Q5_K",
    WeightQuant.Q4_K_M: "Q4_K",
    WeightQuant.Q4_K_S: "Q4_K",
    WeightQuant.Q3_K_L: "Q3_K",
    WeightQuant.Q3_K_M: "Q3_K",
    WeightQuant.Q3_K_S: "Q3_K",
}


class KVType(str, Enum):
    """A KV-cache element type llama.cpp can store (`--cache-type-k/-v`)."""

    F16 = "f16"
    BF16 = "bf16"
    Q8_0 = "q8_0"
    Q5_1 = "q5_1"
    Q5_0 = "q5_0"
    Q4_1 = "q4_1"
    Q4_0 = "q4_0"
    IQ4_NL = "iq4_nl"

    @property
    def ggml_type(self) -> GGMLQuantizationType:
        """The GGML tensor type (its integer is what llama.cpp's `type_k`/`type_v` take)."""
        return GGMLQuantizationType[self.name]

    @property
    def quantized(self) -> bool:
        """Block-quantized types; a quantized V cache needs flash attention."""
        return self not in (KVType.F16, KVType.BF16)

    def nbytes(self, n_elements: int) -> int:
        """Bytes to store `n_elements` values (a whole number of blocks, as llama.cpp requires)."""
        block, type_size = GGML_QUANT_SIZES[self.ggml_type]
        if n_elements % block:
            raise ValueError(f"{n_elements} elements is not a whole number of {self.value} blocks of {block}")
        return n_elements // block * type_size
