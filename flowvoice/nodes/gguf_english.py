"""An English copy of a GGUF language model: its vocabulary cut to the tokens English uses.

gemma3-270m's output layer scores all 262,144 tokens of its multilingual vocabulary at every
generated token: 178 MB of its 253 MB file (the embedding, tied to the output), read once per
token, so on a CPU most of each token's time. The copy keeps the control and byte tokens and
every token written in ASCII characters among the first ``MERGES`` of the vocabulary (a
SentencePiece BPE vocabulary lists its pieces in the order they were merged, most frequent
first, so the pieces a kept token is built from are kept too and the tokenizer still builds
it), drops the other rows of the embedding (and of a separate output matrix) and renumbers the
tokens. Other text is still read (the byte tokens spell it) and written (in smaller pieces).

Measured on the 2-core development machine: 66,133 of 262,144 tokens kept, 22 -> 12 ms per
generated token; 0.8 % of the tokens gemma3-270m generated for 40 everyday questions fall
outside the kept set (mostly rare nouns: "Bacteria", "tyranny"), and those words then come in
smaller pieces.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from flowvoice.nodes._deps import require

#: Leading part of the vocabulary, by merge order, whose ASCII tokens are kept.
MERGES = 100_000
#: Version of the rule below: part of the copy's file name, so a new rule makes a new copy.
RULE_VERSION = 1
#: GGUF token types (llama.cpp's ``llama_token_type``): normal text pieces.
NORMAL = 1
#: SentencePiece's marker for a leading space.
SPACE = "\u2581"
_VOCAB_KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")
_ROWS_PER_TOKEN = ("token_embd.weight", "output.weight")


def kept_tokens(tokens: list[str], types: np.ndarray, merges: int = MERGES) -> np.ndarray:
    """Ids of the tokens the English copy keeps, in order: every non-text token except
    Gemma's thousands of ``<unused…>`` ones, and the ASCII text pieces among the first
    ``merges`` (and every single ASCII character, wherever it is listed)."""
    ids = np.arange(len(tokens))
    ascii_text = np.array([t.replace(SPACE, " ").isascii() for t in tokens])
    single = np.array([len(t) == 1 for t in tokens])
    text = types == NORMAL
    special = ~text & ~np.char.startswith(np.array(tokens), "<unused")
    return ids[special | (text & ascii_text & ((ids < merges) | single))]


def write_english_copy(source: Path, target: Path, merges: int = MERGES) -> int:
    """Write the English copy of the SentencePiece-vocabulary GGUF ``source`` (Gemma's) to
    ``target``; returns its vocabulary size."""
    gguf = require("gguf", "gguf")
    reader = gguf.GGUFReader(source)
    fields = reader.fields
    tokens = [str(t) for t in fields["tokenizer.ggml.tokens"].contents()]
    types = np.array(fields["tokenizer.ggml.token_type"].contents())
    keep = kept_tokens(tokens, types, merges)
    renumber = {int(old): new for new, old in enumerate(keep)}
    writer = gguf.GGUFWriter(target, arch=fields["general.architecture"].contents())
    gguf_log = logging.getLogger("gguf")
    level = gguf_log.level
    gguf_log.setLevel(logging.WARNING)  # not a line per file it writes
    try:
        for key, field in fields.items():
            if key.startswith("GGUF.") or key == "general.architecture":
                continue
            value, kind = field.contents(), field.types[0]
            if key in _VOCAB_KEYS:
                value = [value[i] for i in keep]
            elif key.startswith("tokenizer.ggml.") and key.endswith("_token_id"):
                if int(value) not in renumber:
                    raise ValueError(f"{source}: {key} {value} is not a kept token")
                value = renumber[int(value)]
            sub_type = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, value, kind, sub_type=sub_type)
        for tensor in reader.tensors:
            data = tensor.data[keep] if tensor.name in _ROWS_PER_TOKEN else tensor.data
            writer.add_tensor(tensor.name, data, raw_dtype=tensor.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
        gguf_log.setLevel(level)
    return len(keep)
