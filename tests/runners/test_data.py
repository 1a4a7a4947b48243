"""The trial's data: the built-in stdlib corpus, local files, the fixed held-out tail, the order."""

from __future__ import annotations

import json

import pytest
import torch

from trainplan.errors import UsageError
from trainplan.runners._data import check_data, load_corpus, stdlib_text


def _corpus(**changes):
    args = dict(data="stdlib", text_key="text", tokenizer=None, max_bytes=200_000, eval_tokens=4096,
                seq_len=64, seed=0) | changes
    return load_corpus(**args)


def test_stdlib_corpus_is_real_python_read_in_a_fixed_order():
    first, again = stdlib_text(50_000), stdlib_text(50_000)
    assert first == again and len(first) == 50_000
    assert b"def " in first and b"import " in first


def test_held_out_tail_is_the_same_whatever_the_batch_layout():
    a, b = _corpus(seed=0), _corpus(seed=7)
    assert torch.equal(a.eval, b.eval) and a.eval.numel() == 4096
    assert torch.equal(a.eval, torch.frombuffer(bytearray(stdlib_text(200_000)[-4096:]), dtype=torch.uint8))
    assert a.vocab_size == 256 and int(a.train.max()) < 256
    batches = list(a.eval_batches(5))
    assert sum(x.shape[0] for x in batches) == 4096 // 64 and batches[-1].shape[0] == (4096 // 64) % 5


def test_one_rank_with_accumulation_sees_the_blocks_of_two_ranks():
    c = _corpus()
    step, micro = 3, 4
    batch = 2 * micro
    one_rank = [c.train_batch(step * batch + k * micro, micro) for k in range(2)]  # accum 2, world 1
    two_ranks = [c.train_batch(step * batch + r * micro, micro) for r in range(2)]  # accum 1, world 2
    assert torch.equal(torch.cat(one_rank), torch.cat(two_ranks))
    assert not torch.equal(c.train_batch(0, micro), _corpus(seed=1).train_batch(0, micro))  # seed matters


def test_order_covers_every_block_once_per_epoch():
    c = _corpus(max_bytes=20_000, eval_tokens=1024)
    n = c.train_blocks
    rows = c.train_batch(0, n)
    blocks = c.train[: n * 64].view(n, 64).long()
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, blocks.tolist()))


def test_local_text_jsonl_and_parquet(tmp_path):
    text = stdlib_text(30_000).decode()
    (tmp_path / "a.txt").write_text(text)
    docs = [text[i:i + 3000] for i in range(0, len(text), 3000)]
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in docs))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": docs}), tmp_path / "c.parquet")
    txt = _corpus(data=str(tmp_path / "a.txt"), eval_tokens=1024)
    assert txt.train.numel() + txt.eval.numel() == len(text.encode())
    for name in ("b.jsonl", "c.parquet"):
        c = _corpus(data=str(tmp_path / name), text_key="body", eval_tokens=1024)
        assert c.train.numel() + c.eval.numel() == len("\n\n".join(docs).encode())
    with pytest.raises(UsageError) as err:
        _corpus(data=str(tmp_path / "b.jsonl"), text_key="text")
    assert err.value.key == "--text-key"


def test_bad_data_fails_before_a_launch(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    for ref in (str(tmp_path / "missing.txt"), str(tmp_path / "x.csv"), str(tmp_path)):
        with pytest.raises(UsageError) as err:
            check_data(ref)
        assert err.value.key == "--data"
    (tmp_path / "tiny.txt").write_text("x" * 100)
    with pytest.raises(UsageError, match="too few"):
        _corpus(data=str(tmp_path / "tiny.txt"))
