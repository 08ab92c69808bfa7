"""gemma3-270m-en, the English copy of the packaged gemma3-270m: what it keeps, and that it
reads, writes and answers English as the full model does."""

from __future__ import annotations

import numpy as np
import pytest

from flowvoice.nodes.gguf_english import NORMAL, kept_tokens, write_english_copy
from flowvoice.nodes.llm import GEMMA, GEMMA_EN, resolve_gguf

CONTROL, BYTE = 3, 6


def test_keeps_control_bytes_and_the_frequent_ascii_pieces():
    tokens = ["<pad>", "<unused0>", "<0xC3>", "▁the", "ing", "▁été", "▁zygote", "é", "?", "▁"]
    types = np.array([CONTROL, CONTROL, BYTE] + [NORMAL] * 7)
    kept = [tokens[i] for i in kept_tokens(tokens, types, merges=6)]
    # in merge order: "▁zygote" is past the first 6, "▁été" and "é" are not ASCII; single ASCII
    # characters stay wherever the vocabulary lists them
    assert kept == ["<pad>", "<0xC3>", "▁the", "ing", "?", "▁"]


def test_copy_renumbers_the_tokens_and_keeps_their_rows(tmp_path):
    gguf = pytest.importorskip("gguf")
    tokens = ["<pad>", "<unused0>", "<eos>", "▁the", "▁été", "ing", "é", "?"]
    source, copy = tmp_path / "vocab.gguf", tmp_path / "english.gguf"
    writer = gguf.GGUFWriter(source, arch="gemma3")
    writer.add_array("tokenizer.ggml.tokens", tokens)
    writer.add_array("tokenizer.ggml.scores", [-float(i) for i in range(len(tokens))])
    writer.add_array("tokenizer.ggml.token_type", [CONTROL] * 3 + [NORMAL] * 5)
    writer.add_uint32("tokenizer.ggml.eos_token_id", 2)
    writer.add_key_value("test.sizes", [1, 2], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT64)
    writer.add_tensor(
        "token_embd.weight", np.repeat(np.arange(8, dtype=np.float32), 4).reshape(8, 4)
    )
    writer.add_tensor("output_norm.weight", np.ones(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    assert write_english_copy(source, copy, merges=6) == 5
    fields = gguf.GGUFReader(copy).fields
    assert fields["tokenizer.ggml.tokens"].contents() == ["<pad>", "<eos>", "▁the", "ing", "?"]
    assert fields["tokenizer.ggml.scores"].contents() == [0, -2, -3, -5, -7]
    assert fields["tokenizer.ggml.eos_token_id"].contents() == 1
    assert fields["test.sizes"].contents() == [1, 2]
    assert fields["test.sizes"].types == [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT64]
    tensors = {t.name: t.data for t in gguf.GGUFReader(copy).tensors}
    assert tensors["token_embd.weight"][:, 0].tolist() == [0, 2, 3, 5, 7]  # the kept rows
    assert tensors["output_norm.weight"].tolist() == [1, 1, 1, 1]


@pytest.fixture(scope="module")
def models():
    llama_cpp = pytest.importorskip("llama_cpp")
    full = llama_cpp.Llama(str(resolve_gguf(GEMMA)), n_ctx=1024, verbose=False)
    english = llama_cpp.Llama(str(resolve_gguf(GEMMA_EN)), n_ctx=1024, verbose=False)
    yield full, english
    full.close()
    english.close()


def pieces(llama, text: str) -> list[bytes]:
    return [llama.detokenize([t]) for t in llama.tokenize(text.encode(), add_bos=False)]


def test_english_copy_is_derived_once():
    path = resolve_gguf(GEMMA_EN)
    mtime = path.stat().st_mtime_ns
    assert resolve_gguf(GEMMA_EN) == path != resolve_gguf(GEMMA)
    assert path.stat().st_mtime_ns == mtime
    assert not list(path.parent.glob(f"{path.name}.*.part"))


def test_reads_english_as_the_full_model_and_other_text_byte_by_byte(models):
    full, english = models
    assert 30_000 < english.n_vocab() < full.n_vocab() // 2
    text = "Hi! Could you remind me at 7:30 tomorrow, please? I'd like the weather first."
    assert pieces(english, text) == pieces(full, text)
    for text in ("Café au lait ☕ in 東京", "<start_of_turn> is said, not a control token"):
        tokens = english.tokenize(text.encode(), add_bos=False)
        assert english.detokenize(tokens).decode() == text
    turn = english.tokenize(b"<start_of_turn>user\n", add_bos=True, special=True)
    assert english.detokenize(turn[1:2], special=True) == b"<start_of_turn>"


def test_answers_as_the_full_model(models):
    from flowvoice.nodes.chat_history import ChatHistory

    history = ChatHistory()
    history.add_user("What is the capital of France?")
    replies = [
        llama.create_completion(
            history.completion_prompt(),
            max_tokens=24,
            temperature=0,
            stop=ChatHistory.completion_stop(),
        )["choices"][0]["text"]
        for llama in models
    ]
    assert replies[0] == replies[1] and "Paris" in replies[1]
