"""Training text for a trial: read, tokenize, pack into ``seq_len`` blocks, hold out a fixed tail.

The built-in corpus is the Python standard library's own source, read from the running
interpreter: real text that every machine has, no download. Byte-level tokens (vocabulary 256)
need no tokenizer either. Every trial on the same data evaluates on the same held-out tail, and
every trial with the same seed sees the same blocks in the same order whatever its batch layout:
step ``s`` of a run with global batch ``G`` trains on blocks ``s*G ... s*G+G-1`` of one seeded
permutation, so 1 rank x 2 micro-batches and 2 ranks x 1 micro-batch see identical sequences.

torch is imported inside the functions that need it.
"""

from __future__ import annotations

import json
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainplan.errors import UsageError

if TYPE_CHECKING:
    import torch

__all__ = ["Corpus", "check_data", "load_corpus", "stdlib_text"]

_SUFFIXES = (".txt", ".jsonl", ".parquet")


@dataclass(frozen=True, slots=True, kw_only=True)
class Corpus:
    """Token ids of a trial's data, split once into training and held-out evaluation tokens."""

    train: torch.Tensor
    """Training token ids (1-D)."""
    eval: torch.Tensor
    """Held-out token ids (1-D), a whole number of ``seq_len`` blocks."""
    vocab_size: int
    """Size of the token vocabulary (256 for bytes)."""
    seq_len: int
    """Tokens per block."""
    seed: int
    """Seeds the order in which training blocks are visited."""

    @property
    def train_blocks(self) -> int:
        return self.train.numel() // self.seq_len

    def eval_batches(self, batch: int) -> Iterator[torch.Tensor]:
        """The held-out blocks in order, ``batch`` at a time (the last batch may be smaller)."""
        blocks = self.eval.view(-1, self.seq_len)
        for start in range(0, blocks.shape[0], batch):
            yield blocks[start:start + batch].long()

    def train_batch(self, first: int, count: int) -> torch.Tensor:
        """Blocks ``first ... first+count-1`` of the seeded visiting order, shape ``(count, seq_len)``.

        The order is a fresh permutation per pass over the data (epoch), seeded by ``(seed, epoch)``.
        """
        import torch

        rows = []
        n = self.train_blocks
        for index in range(first, first + count):
            epoch, pos = divmod(index, n)
            block = int(_permutation(self.seed, epoch, n)[pos])
            rows.append(self.train[block * self.seq_len:(block + 1) * self.seq_len])
        return torch.stack(rows).long()


_PERM_CACHE: dict[tuple[int, int, int], Any] = {}


def _permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    key = (seed, epoch, n)
    if key not in _PERM_CACHE:
        import torch

        _PERM_CACHE.clear()  # one epoch at a time is all a run needs
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        _PERM_CACHE[key] = torch.randperm(n, generator=gen)
    return _PERM_CACHE[key]


def stdlib_text(max_bytes: int) -> bytes:
    """Up to ``max_bytes`` of the interpreter's standard-library ``.py`` files, in a fixed order.

    Walks ``sysconfig.get_paths()["stdlib"]`` with sorted folders and files and stops once enough
    is read, so startup costs milliseconds rather than a scan of the whole tree.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks: list[bytes] = []
    total = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "dist-packages", "__pycache__"))
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            try:
                data = (Path(folder) / name).read_bytes()
            except OSError:
                continue
            chunks.append(data)
            total += len(data)
            if total >= max_bytes:
                return b"\n".join(chunks)[:max_bytes]
    if not chunks:
        raise UsageError("--data", f"no standard-library sources found under {root}; pass --data FILE")
    return b"\n".join(chunks)[:max_bytes]


def _data_files(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
        if not found:
            raise UsageError("--data", f"folder {path} holds no {', '.join(_SUFFIXES)} files")
        return found
    if path.suffix not in _SUFFIXES:
        raise UsageError("--data", f"{path}: unsupported file type {path.suffix!r}; use {', '.join(_SUFFIXES)}")
    return [path]


def check_data(data: str) -> None:
    """Fail fast in the parent (before any launch) on a data reference that cannot work."""
    if data == "stdlib" or data.startswith("hf:"):
        return
    path = Path(os.path.expanduser(data))
    if not path.exists():
        raise UsageError("--data", f"{data!r} is not 'stdlib', 'hf:NAME' or an existing file or folder")
    _data_files(path)


def _documents(data: str, text_key: str, max_bytes: int) -> Iterator[str]:
    """The text documents of a local file/folder or a ``datasets`` dataset, up to ``max_bytes``."""
    if data.startswith("hf:"):
        try:
            import datasets  # type: ignore[import-not-found]
        except ImportError:
            raise UsageError("--data", "hf: datasets need the `datasets` package (pip install datasets)") from None
        rows = datasets.load_dataset(data[3:], split="train", streaming=True)
        sources: Iterator[Any] = (row[text_key] for row in rows)
    else:
        sources = _local_documents(_data_files(Path(os.path.expanduser(data))), text_key)
    total = 0
    for text in sources:
        if not isinstance(text, str):
            raise UsageError("--text-key", f"field {text_key!r} holds {type(text).__name__}, not text")
        yield text
        total += len(text.encode())
        if total >= max_bytes:
            return


def _local_documents(files: list[Path], text_key: str) -> Iterator[Any]:
    for path in files:
        if path.suffix == ".txt":
            yield path.read_text(errors="replace")
        elif path.suffix == ".jsonl":
            with path.open() as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    record = json.loads(line)
                    if not isinstance(record, dict) or text_key not in record:
                        raise UsageError("--text-key", f"{path}:{lineno} has no field {text_key!r}")
                    yield record[text_key]
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            if text_key not in table.column_names:
                raise UsageError("--text-key", f"{path} has no column {text_key!r}; columns: {', '.join(table.column_names)}")
            yield from table.column(text_key).to_pylist()


def load_corpus(*, data: str, text_key: str, tokenizer: str | None, max_bytes: int,
                eval_tokens: int, seq_len: int, seed: int) -> Corpus:
    """Read and tokenize the trial's data, and split off the held-out tail.

    The held-out tail is the last ``eval_tokens`` tokens (at most a tenth of a small corpus),
    rounded down to whole blocks: fixed by the data alone, so trials stay comparable.
    """
    import torch

    if tokenizer is None:
        raw = stdlib_text(max_bytes) if data == "stdlib" else "\n\n".join(_documents(data, text_key, max_bytes)).encode()
        ids = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        vocab = 256
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(os.path.expanduser(tokenizer))
        docs = [stdlib_text(max_bytes).decode(errors="replace")] if data == "stdlib" else _documents(data, text_key, max_bytes)
        sep = [tok.eos_token_id] if tok.eos_token_id is not None else []
        flat: list[int] = []
        for doc in docs:
            flat.extend(tok(doc, add_special_tokens=False)["input_ids"])
            flat.extend(sep)
        ids = torch.tensor(flat, dtype=torch.int32)
        vocab = len(tok)
    held = min(eval_tokens, ids.numel() // 10) // seq_len * seq_len
    if held < seq_len or ids.numel() - held < seq_len:
        raise UsageError("--data", f"{ids.numel()} tokens are too few for --seq-len {seq_len}: "
                                   f"need at least {10 * seq_len} to hold out one evaluation block")
    return Corpus(train=ids[:-held], eval=ids[-held:], vocab_size=vocab, seq_len=seq_len, seed=seed)
