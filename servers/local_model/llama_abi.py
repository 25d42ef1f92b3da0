"""The llama.cpp C API, called through ``ctypes`` from the library inside the ``xllamacpp`` wheel.

Why this way: ``xllamacpp`` ships llama.cpp prebuilt (a ``manylinux`` abi3 wheel), so setting
up the local model needs no compiler; llama-cpp-python, the usual route, compiles llama.cpp
from source on every fresh machine (5–20 min here). Its server is not what we serve with (it
decodes a request's samples as separate slots and its usage counts one choice); only its
library's C functions are used, the same ones llama-cpp-python wraps.

The wheel carries no header, so the two parameter structs are declared here for the exact
pinned version, and :func:`check_layout` refuses any other build: it compares the library's
own default parameters, byte for byte, with the ones this layout expects. After a context is
made, :class:`Library` reads back every value it set through llama.cpp's getters.

The library is found through the wheel's file records (``importlib.metadata``); the
``xllamacpp`` Python module is never imported.
"""

from __future__ import annotations

import ctypes
import functools
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "xllamacpp"
PINNED_VERSION = "2026.10.11549"  # the layout below is this build's; see check_layout

c_token = ctypes.c_int32
c_pos = ctypes.c_int32
c_seq = ctypes.c_int32
c_pointer = ctypes.c_void_p


class LlamaBatch(ctypes.Structure):
    _fields_ = [
        ("n_tokens", ctypes.c_int32),
        ("token", ctypes.POINTER(c_token)),
        ("embd", ctypes.POINTER(ctypes.c_float)),
        ("pos", ctypes.POINTER(c_pos)),
        ("n_seq_id", ctypes.POINTER(ctypes.c_int32)),
        ("seq_id", ctypes.POINTER(ctypes.POINTER(c_seq))),
        ("logits", ctypes.POINTER(ctypes.c_int8)),
    ]


class ContextParams(ctypes.Structure):
    """``struct llama_context_params`` of the pinned build (168 bytes). Against the public
    header of spring 2026 this build has one more counter before ``n_threads`` and two more
    8-byte members (at offsets 128 and 160); they keep their defaults here."""

    _fields_ = [
        ("n_ctx", ctypes.c_uint32),
        ("n_batch", ctypes.c_uint32),
        ("n_ubatch", ctypes.c_uint32),
        ("n_seq_max", ctypes.c_uint32),
        ("_counters", ctypes.c_uint32 * 3),
        ("n_threads", ctypes.c_int32),
        ("n_threads_batch", ctypes.c_int32),
        ("ctx_type", ctypes.c_int32),
        ("rope_scaling_type", ctypes.c_int32),
        ("pooling_type", ctypes.c_int32),
        ("attention_type", ctypes.c_int32),
        ("flash_attn_type", ctypes.c_int32),
        ("rope_freq_base", ctypes.c_float),
        ("rope_freq_scale", ctypes.c_float),
        ("yarn_ext_factor", ctypes.c_float),
        ("yarn_attn_factor", ctypes.c_float),
        ("yarn_beta_fast", ctypes.c_float),
        ("yarn_beta_slow", ctypes.c_float),
        ("yarn_orig_ctx", ctypes.c_uint32),
        ("defrag_thold", ctypes.c_float),
        ("cb_eval", c_pointer),
        ("cb_eval_user_data", c_pointer),
        ("type_k", ctypes.c_int32),
        ("type_v", ctypes.c_int32),
        ("abort_callback", c_pointer),
        ("abort_callback_data", c_pointer),
        ("_reserved", ctypes.c_uint64),
        ("embeddings", ctypes.c_bool),
        ("offload_kqv", ctypes.c_bool),
        ("no_perf", ctypes.c_bool),
        ("op_offload", ctypes.c_bool),
        ("swa_full", ctypes.c_bool),
        ("kv_unified", ctypes.c_bool),
        ("samplers", c_pointer),
        ("n_samplers", ctypes.c_size_t),
        ("_tail", ctypes.c_uint64),
    ]


class ModelParams(ctypes.Structure):
    """``struct llama_model_params`` of the pinned build (80 bytes), opaque: only its
    defaults are used (CPU, memory-mapped weights), so only its size and members matter, for
    passing it by value and for :func:`check_layout`."""

    _fields_ = [
        ("_pointers", c_pointer * 2),
        ("_ints", ctypes.c_int32 * 5),
        ("_more_pointers", c_pointer * 4),
        ("_flags", ctypes.c_bool * 6),
    ]


# The pinned build's defaults, as its llama_context_default_params() and
# llama_model_default_params() return them, member by member (padding excluded): a build
# with other sizes or another order does not match and is refused.
_CONTEXT_DEFAULTS: dict[str, object] = {
    "n_ctx": 512,
    "n_batch": 2048,
    "n_ubatch": 512,
    "n_seq_max": 1,
    "_counters": [0, 0, 1],
    "n_threads": 4,
    "n_threads_batch": 4,
    "ctx_type": 0,
    "rope_scaling_type": -1,
    "pooling_type": -1,
    "attention_type": -1,
    "flash_attn_type": -1,
    "rope_freq_base": 0.0,
    "rope_freq_scale": 0.0,
    "yarn_ext_factor": -1.0,
    "yarn_attn_factor": -1.0,
    "yarn_beta_fast": -1.0,
    "yarn_beta_slow": -1.0,
    "yarn_orig_ctx": 0,
    "defrag_thold": -1.0,
    "cb_eval": None,
    "cb_eval_user_data": None,
    "type_k": 1,
    "type_v": 1,
    "abort_callback": None,
    "abort_callback_data": None,
    "_reserved": 0,
    "embeddings": False,
    "offload_kqv": True,
    "no_perf": True,
    "op_offload": True,
    "swa_full": True,
    "kv_unified": False,
    "samplers": None,
    "n_samplers": 0,
    "_tail": 0,
}
_MODEL_DEFAULTS: dict[str, object] = {
    "_pointers": [None, None],
    "_ints": [-1, 1, -1, 1, 0],
    "_more_pointers": [None, None, None, None],
    "_flags": [False, False, True, False, False, False],
}


class LayoutMismatch(RuntimeError):
    """The installed llama.cpp build is not the one whose structs are declared here."""


def library_path() -> Path:
    """The llama.cpp shared library inside the installed ``xllamacpp`` wheel."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError as error:
        raise LayoutMismatch(
            f"{DISTRIBUTION} is not installed: run `make local-model` (pip install -e '.[local]')"
        ) from error
    if dist.version != PINNED_VERSION:
        raise LayoutMismatch(
            f"{DISTRIBUTION} {dist.version} is installed; this code declares the C structs of "
            f"{PINNED_VERSION} only: run `make local-model`"
        )
    for file in dist.files or ():
        if file.name.startswith("xllamacpp") and file.name.endswith(".so"):
            return Path(str(dist.locate_file(file)))
    raise LayoutMismatch(f"{DISTRIBUTION} {dist.version} has no shared library in its RECORD")


def check_layout(library: ctypes.CDLL) -> None:
    """Refuses a build whose default parameters differ, member by member, from the pinned
    build's: the only evidence of a struct layout that a library without a header gives."""
    for name, params, expected in (
        ("llama_context_params", library.llama_context_default_params(), _CONTEXT_DEFAULTS),
        ("llama_model_params", library.llama_model_default_params(), _MODEL_DEFAULTS),
    ):
        actual = {field: _plain(getattr(params, field)) for field, _ in params._fields_}
        if actual != expected:
            differing = sorted(f for f in expected if actual.get(f) != expected[f])
            raise LayoutMismatch(
                f"{name} of the installed llama.cpp does not match the layout declared for "
                f"{DISTRIBUTION} {PINNED_VERSION}: members {differing} differ"
            )


def _plain(value: object) -> object:
    if isinstance(value, ctypes.Array):
        return [_plain(item) for item in value]
    return value


_LOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, c_pointer)


@_LOG_CALLBACK
def _quiet_log(level: int, text: bytes | None, user_data: int | None) -> None:
    # llama.cpp logs every tensor and parameter at load; a server's log wants none of it.
    return None


_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "llama_backend_init": (None, []),
    "llama_log_set": (None, [_LOG_CALLBACK, c_pointer]),
    "llama_model_default_params": (ModelParams, []),
    "llama_context_default_params": (ContextParams, []),
    "llama_model_load_from_file": (c_pointer, [ctypes.c_char_p, ModelParams]),
    "llama_model_free": (None, [c_pointer]),
    "llama_model_get_vocab": (c_pointer, [c_pointer]),
    "llama_model_meta_val_str": (
        ctypes.c_int32,
        [c_pointer, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t],
    ),
    "llama_init_from_model": (c_pointer, [c_pointer, ContextParams]),
    "llama_free": (None, [c_pointer]),
    "llama_n_ctx": (ctypes.c_uint32, [c_pointer]),
    "llama_n_ctx_seq": (ctypes.c_uint32, [c_pointer]),
    "llama_n_batch": (ctypes.c_uint32, [c_pointer]),
    "llama_n_ubatch": (ctypes.c_uint32, [c_pointer]),
    "llama_n_seq_max": (ctypes.c_uint32, [c_pointer]),
    "llama_n_threads": (ctypes.c_int32, [c_pointer]),
    "llama_n_threads_batch": (ctypes.c_int32, [c_pointer]),
    "llama_get_memory": (c_pointer, [c_pointer]),
    "llama_memory_seq_rm": (ctypes.c_bool, [c_pointer, c_seq, c_pos, c_pos]),
    "llama_memory_seq_cp": (None, [c_pointer, c_seq, c_seq, c_pos, c_pos]),
    "llama_batch_init": (LlamaBatch, [ctypes.c_int32, ctypes.c_int32, ctypes.c_int32]),
    "llama_batch_free": (None, [LlamaBatch]),
    "llama_decode": (ctypes.c_int32, [c_pointer, LlamaBatch]),
    "llama_get_logits_ith": (ctypes.POINTER(ctypes.c_float), [c_pointer, ctypes.c_int32]),
    "llama_vocab_n_tokens": (ctypes.c_int32, [c_pointer]),
    "llama_vocab_bos": (c_token, [c_pointer]),
    "llama_vocab_eos": (c_token, [c_pointer]),
    "llama_vocab_get_add_bos": (ctypes.c_bool, [c_pointer]),
    "llama_vocab_get_text": (ctypes.c_char_p, [c_pointer, c_token]),
    "llama_vocab_is_eog": (ctypes.c_bool, [c_pointer, c_token]),
    "llama_tokenize": (
        ctypes.c_int32,
        [
            c_pointer,
            ctypes.c_char_p,
            ctypes.c_int32,
            ctypes.POINTER(c_token),
            ctypes.c_int32,
            ctypes.c_bool,
            ctypes.c_bool,
        ],
    ),
    "llama_token_to_piece": (
        ctypes.c_int32,
        [c_pointer, c_token, ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_bool],
    ),
}


@functools.cache
def load() -> ctypes.CDLL:
    """The library, its functions typed, its layout checked, its backend initialized, and
    its logging silenced; once per process."""
    library = ctypes.CDLL(str(library_path()))
    for name, (restype, argtypes) in _SIGNATURES.items():
        function = getattr(library, name)
        function.restype = restype
        function.argtypes = argtypes
    check_layout(library)
    library.llama_log_set(_quiet_log, None)
    library.llama_backend_init()
    return library


assert ctypes.sizeof(ContextParams) == 168 and ctypes.sizeof(ModelParams) == 80
