"""Memory that finds by meaning: the converted embedding model, the embedder, the vectors
in the database, the indexer and hybrid recall. Real model, real llama.cpp, real sqlite-vec."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

from agents.memory.convert import convert, read_safetensors, source_zip
from agents.memory.embedder import Embedder, _Model

SENTENCES = [
    "The disk is full: / has 0 bytes free.",
    "storage is running out",
    "Hello world!",
    "unaffable tokenization of Zürich's café, 42 times",
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("embedding-models")
    return {p: convert(out / f"minilm.{p}.gguf", p) for p in ("f32", "q8_0")}


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    with zipfile.ZipFile(source_zip()) as zf:
        return {k: v.astype(np.float64) for k, v in read_safetensors(zf.read("model.safetensors")).items()}


def _reference(ids: list[int], w: dict[str, np.ndarray]) -> np.ndarray:
    """all-MiniLM-L6-v2 in numpy (fp64), straight from the original safetensors: BERT
    encoder, mean pooling, unit length — what sentence-transformers computes."""
    def norm(x: np.ndarray, p: str) -> np.ndarray:
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * w[f"{p}.weight"] + w[f"{p}.bias"]

    def linear(x: np.ndarray, p: str) -> np.ndarray:
        return x @ w[f"{p}.weight"].T + w[f"{p}.bias"]

    erf = np.vectorize(math.erf)
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:len(ids)]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = norm(x, "embeddings.LayerNorm")
    for layer in range(6):
        p = f"encoder.layer.{layer}."
        q, k, v = (linear(x, p + f"attention.self.{n}").reshape(-1, 12, 32).transpose(1, 0, 2)
                   for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(32)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        attended = (scores @ v).transpose(1, 0, 2).reshape(-1, 384)
        x = norm(x + linear(attended, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        h = linear(x, p + "intermediate.dense")
        h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
        x = norm(x + linear(h, p + "output.dense"), p + "output.LayerNorm")
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


@pytest.mark.timeout(180)
def test_the_converted_model_loads_in_llama_cpp_and_agrees_with_the_original(converted, weights) -> None:
    with zipfile.ZipFile(source_zip()) as zf:
        vocab = json.loads(zf.read("tokenizer.json"))["model"]["vocab"]
    assert converted["q8_0"].stat().st_size < 26 << 20  # 24 MiB, a quarter of fp32
    assert converted["q8_0"].stat().st_mode & 0o077 == 0
    for precision, floor in (("f32", 0.99999), ("q8_0", 0.999)):
        model = _Model(converted[precision])
        try:
            # WordPiece as BERT does it: lower case, accents stripped, [CLS] … [SEP].
            assert model.tokens("The disk is FULL") == [vocab[t] for t in
                                                        ("[CLS]", "the", "disk", "is", "full", "[SEP]")]
            for sentence in SENTENCES:
                ids = model.tokens(sentence)
                ours = model.embed_one(sentence)
                assert ours.shape == (384,)
                assert abs(float(np.linalg.norm(ours)) - 1) < 1e-4
                assert float(ours @ _reference(ids, weights)) >= floor, (precision, sentence)
        finally:
            model.close()


@pytest.mark.timeout(120)
async def test_the_embedder_runs_off_the_loop_and_ranks_a_paraphrase_first(converted) -> None:
    embedder = Embedder(converted["q8_0"])
    await embedder.start()
    try:
        disk, cat, query = await embedder.embed(
            ["Reflection: the disk filled up, / had no free space left", "the cat sat on the mat",
             "storage is running out"])
        assert float(query @ disk) > float(query @ cat) + 0.2
    finally:
        embedder.close()
    with pytest.raises(Exception, match="not running"):
        await embedder.embed(["x"])
