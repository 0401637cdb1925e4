"""Model loading: GGUF files and safetensors folders into MLX weights and a tokenizer."""

from draftwise.runtime.loading.converted_cache import default_cache_dir
from draftwise.runtime.loading.gguf_loader import load_gguf
from draftwise.runtime.loading.gguf_tensors import POLICIES
from draftwise.runtime.loading.hf_folder import load_safetensors_folder
from draftwise.runtime.loading.incremental_decoder import IncrementalDecoder
from draftwise.runtime.loading.loaded_model import LoadedModel
from draftwise.runtime.loading.tokenizer import Tokenizer, load_tokenizer

__all__ = [
    "POLICIES",
    "IncrementalDecoder",
    "LoadedModel",
    "Tokenizer",
    "default_cache_dir",
    "load_gguf",
    "load_safetensors_folder",
    "load_tokenizer",
]
