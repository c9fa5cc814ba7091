"""Llama-architecture GGUFs of random weights, for timing llama.cpp where a real model cannot go.

A model's speed depends on its shapes and tensor types, not on what its weights say, so a
copy with the same tensors (names, shapes, types) and the same tokenizer runs at the real
model's speed. `spec_of` records a GGUF's metadata and tensor list (no weights: SmolLM2's
spec is ~0.5 MB compressed, the model 94 MiB); `write_model` writes random weights to
that spec, or to a preset size (`--params 1B`) with the spec's tokenizer.

    python -m app.bench.random_model --like smollm2.spec.json.xz --out smollm2-random.gguf
    python -m app.bench.random_model --like smollm2.spec.json.xz --params 1B --out 1b.gguf

Quantized blocks are made directly, not by quantizing floats: random quant bytes with a
fixed, sane scale in each block's f16 fields (random bytes there would make NaN and Inf
scales). The 1B preset is Q8_0: the type the SmolLM2 file uses for its embedding, half
the bytes of F16 to write, load and read each step, and a common deployment type, so the
figures are those of a real quantized 1B. Deterministic for a given --seed.
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

SPEC_FORMAT = 1
WEIGHT_STD = 0.02  # of every 2-D weight; norms are 1 +- this

# Each quantized type's f16 fields at the start of a block: (scale, min offset in scales),
# so that dequantized values are centred on 0 with about WEIGHT_STD spread.
# Q4_0: d*(q-8), q 0..15 · Q4_1: d*q+m · Q5_0: d*(q-16) · Q5_1: d*q+m · Q8_0: d*q, q int8.
_QUANT_FIELDS: dict[str, tuple[float, float | None]] = {
    "Q4_0": (WEIGHT_STD / 4.6, None),
    "Q4_1": (WEIGHT_STD / 4.6, -7.5),
    "Q5_0": (WEIGHT_STD / 9.2, None),
    "Q5_1": (WEIGHT_STD / 9.2, -15.5),
    "Q8_0": (WEIGHT_STD / 73.0, None),
}


class Field(msgspec.Struct, array_like=True):
    key: str
    type: str  # GGUFValueType name
    sub_type: str | None  # an array's element type
    value: Any


class TensorSpec(msgspec.Struct, array_like=True):
    name: str
    shape: list[int]  # ggml order: ne0 (the row length) first
    type: str  # GGMLQuantizationType name


class Spec(msgspec.Struct, kw_only=True):
    format: int = SPEC_FORMAT
    source: str  # the file it was read from
    fields: list[Field]
    tensors: list[TensorSpec]


class Preset(msgspec.Struct, frozen=True, kw_only=True):
    hidden: int
    layers: int
    ffn: int
    heads: int
    kv_heads: int
    type: str  # of the 2-D weights


PRESETS: dict[str, Preset] = {
    # Llama-3.2-1B's shape on SmolLM2's 49,152-token vocabulary: 1.07 B parameters.
    "1B": Preset(hidden=2048, layers=16, ffn=8192, heads=32, kv_heads=8, type="Q8_0"),
    # For tests and the CPU dry run: loads and generates in well under a second.
    "tiny": Preset(hidden=64, layers=2, ffn=128, heads=4, kv_heads=2, type="Q8_0"),
}


# --- the spec ---------------------------------------------------------------------------------


def spec_of(path: Path) -> Spec:
    """A GGUF's metadata and tensor list, without its weights."""
    import gguf

    reader = gguf.GGUFReader(path)
    fields = []
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):  # the header, which the writer makes itself
            continue
        sub = f.types[-1].name if f.types[0] == gguf.GGUFValueType.ARRAY else None
        value = f.contents()
        if isinstance(value, np.generic):
            value = value.item()
        fields.append(Field(key=key, type=f.types[0].name, sub_type=sub, value=value))
    tensors = [TensorSpec(name=t.name, shape=[int(n) for n in t.shape], type=t.tensor_type.name)
               for t in reader.tensors]
    return Spec(source=path.name, fields=fields, tensors=tensors)


def save_spec(spec: Spec, path: Path) -> None:
    """As xz-compressed JSON when the name ends in .xz, else plain JSON."""
    data = msgspec.json.encode(spec)
    path.write_bytes(lzma.compress(data, preset=9) if path.suffix == ".xz" else data)


def load_spec(path: Path) -> Spec:
    """A spec file (.json or .json.xz), or a GGUF read on the spot."""
    with path.open("rb") as f:
        head = f.read(4)
    if head == b"GGUF":
        return spec_of(path)
    data = path.read_bytes()
    if path.suffix == ".xz":
        data = lzma.decompress(data)
    spec = msgspec.json.decode(data, type=Spec)
    if spec.format != SPEC_FORMAT:
        raise ValueError(f"{path}: spec format {spec.format}, this reads {SPEC_FORMAT}")
    return spec


def sized_like(spec: Spec, preset: Preset, name: str) -> Spec:
    """`spec`'s tokenizer and general metadata on a llama of `preset`'s shape (tied embeddings)."""
    vocab = next((len(f.value) for f in spec.fields if f.key == "tokenizer.ggml.tokens"), 0)
    if not vocab:
        raise ValueError(f"{spec.source} has no tokenizer.ggml.tokens to take the tokenizer from")
    p = preset
    head_dim = p.hidden // p.heads
    llama = {
        "llama.block_count": p.layers,
        "llama.embedding_length": p.hidden,
        "llama.feed_forward_length": p.ffn,
        "llama.attention.head_count": p.heads,
        "llama.attention.head_count_kv": p.kv_heads,
        "llama.rope.dimension_count": head_dim,
        "llama.vocab_size": vocab,
    }
    fields = []
    for f in spec.fields:
        if f.key in llama:
            fields.append(Field(key=f.key, type="UINT32", sub_type=None, value=llama.pop(f.key)))
        elif f.key == "general.file_type":
            fields.append(Field(key=f.key, type="UINT32", sub_type=None, value=7))  # mostly Q8_0
        elif f.key not in ("general.size_label", "general.finetune"):
            fields.append(f)
    fields += [Field(key=k, type="UINT32", sub_type=None, value=v) for k, v in llama.items()]
    kv = p.kv_heads * head_dim
    tensors = [TensorSpec(name="token_embd.weight", shape=[p.hidden, vocab], type=p.type),
               TensorSpec(name="output_norm.weight", shape=[p.hidden], type="F32")]
    for i in range(p.layers):
        b = f"blk.{i}."
        tensors += [
            TensorSpec(name=b + "attn_norm.weight", shape=[p.hidden], type="F32"),
            TensorSpec(name=b + "attn_q.weight", shape=[p.hidden, p.hidden], type=p.type),
            TensorSpec(name=b + "attn_k.weight", shape=[p.hidden, kv], type=p.type),
            TensorSpec(name=b + "attn_v.weight", shape=[p.hidden, kv], type=p.type),
            TensorSpec(name=b + "attn_output.weight", shape=[p.hidden, p.hidden], type=p.type),
            TensorSpec(name=b + "ffn_norm.weight", shape=[p.hidden], type="F32"),
            TensorSpec(name=b + "ffn_gate.weight", shape=[p.hidden, p.ffn], type=p.type),
            TensorSpec(name=b + "ffn_up.weight", shape=[p.hidden, p.ffn], type=p.type),
            TensorSpec(name=b + "ffn_down.weight", shape=[p.ffn, p.hidden], type=p.type),
        ]
    return Spec(source=f"{spec.source} tokenizer, preset {name}", fields=fields, tensors=tensors)


def parameter_count(spec: Spec) -> int:
    return sum(int(np.prod(t.shape)) for t in spec.tensors)


# --- writing ----------------------------------------------------------------------------------


def _random_tensor(t: TensorSpec, seed: int, index: int) -> np.ndarray:
    """The tensor's bytes (or floats), reproducible from (seed, index)."""
    import gguf

    rng = np.random.default_rng([seed, index])
    n = int(np.prod(t.shape))
    if t.type in ("F32", "F16"):
        values = rng.standard_normal(n, dtype=np.float32) * WEIGHT_STD
        if len(t.shape) == 1:  # a norm's gains
            values += 1.0
        return values.astype(np.float16 if t.type == "F16" else np.float32).reshape(t.shape[::-1])
    if t.type not in _QUANT_FIELDS:
        raise ValueError(f"{t.name}: type {t.type} is not one this writes "
                         f"(F32, F16, {', '.join(_QUANT_FIELDS)})")
    qtype = gguf.GGMLQuantizationType[t.type]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    if t.shape[0] % block:
        raise ValueError(f"{t.name}: rows of {t.shape[0]} are not whole {t.type} blocks of {block}")
    blocks = np.frombuffer(rng.bytes(n // block * size), dtype=np.uint8).reshape(-1, size).copy()
    scale, minimum = _QUANT_FIELDS[t.type]
    blocks[:, 0:2] = np.frombuffer(np.float16(scale).tobytes(), dtype=np.uint8)
    if minimum is not None:
        blocks[:, 2:4] = np.frombuffer(np.float16(minimum * scale).tobytes(), dtype=np.uint8)
    return blocks.reshape(-1)


def _add_field(writer: Any, f: Field) -> None:
    import gguf

    vtype = gguf.GGUFValueType[f.type]
    sub = gguf.GGUFValueType[f.sub_type] if f.sub_type else None
    writer.add_key_value(f.key, f.value, vtype, sub_type=sub)


def write_model(spec: Spec, out: Path, *, seed: int = 0, name: str | None = None, workers: int = 0) -> int:
    """Write a GGUF of `spec`'s tensors with random weights; the bytes written. Tensors are
    made by a pool of threads (numpy's generators release the GIL) a few ahead of the writer,
    so memory stays at a few tensors, not the model."""
    import os

    import gguf

    arch = next((f.value for f in spec.fields if f.key == "general.architecture"), "llama")
    writer = gguf.GGUFWriter(out, arch)
    for f in spec.fields:
        if f.key == "general.architecture":
            continue  # the writer adds it
        if f.key == "general.name":
            f = Field(key=f.key, type=f.type, sub_type=None, value=name or f"{f.value} (random weights)")
        _add_field(writer, f)
    for t in spec.tensors:
        qtype = gguf.GGMLQuantizationType[t.type]
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        nbytes = int(np.prod(t.shape)) // block * size
        writer.add_tensor_info(t.name, t.shape[::-1], np.dtype(np.float32), nbytes, raw_dtype=qtype)
    writer.write_header_to_file(out)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    threads = workers or min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(threads) as pool:
        for tensor in _ahead(pool, spec, seed, threads * 2):
            writer.write_tensor_data(tensor)
    writer.close()
    return out.stat().st_size


def _ahead(pool: ThreadPoolExecutor, spec: Spec, seed: int, depth: int) -> Iterator[np.ndarray]:
    """The tensors in order, at most `depth` being made at once."""
    pending = []
    for i, t in enumerate(spec.tensors):
        pending.append(pool.submit(_random_tensor, t, seed, i))
        if len(pending) >= depth:
            yield pending.pop(0).result()
    for fut in pending:
        yield fut.result()


# --- the command --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.bench.random_model", description=__doc__.split("\n\n")[0])
    p.add_argument("--like", type=Path, required=True, metavar="SPEC",
                   help="a spec (.json or .json.xz, from --save-spec) or a GGUF: its tensors and metadata, "
                        "or with --params its tokenizer")
    p.add_argument("--params", choices=sorted(PRESETS), help="a preset shape instead of SPEC's")
    p.add_argument("--out", type=Path, metavar="FILE", help="the GGUF to write")
    p.add_argument("--save-spec", type=Path, metavar="FILE",
                   help="write SPEC's spec here (.json.xz: compressed)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    spec = load_spec(args.like)
    if args.save_spec:
        save_spec(spec, args.save_spec)
        print(f"spec of {spec.source}: {len(spec.tensors)} tensors -> {args.save_spec} "
              f"({args.save_spec.stat().st_size / 1024:.0f} KiB)")
    if args.params:
        spec = sized_like(spec, PRESETS[args.params], args.params)
    if args.out:
        start = time.perf_counter()
        size = write_model(spec, args.out, seed=args.seed,
                           name=f"random {args.params}" if args.params else None)
        print(json.dumps({"out": str(args.out), "params": parameter_count(spec), "bytes": size,
                          "seconds": round(time.perf_counter() - start, 2)}))
    elif not args.save_spec:
        p.error("nothing to do: give --out and/or --save-spec")
    return 0


if __name__ == "__main__":
    sys.exit(main())
