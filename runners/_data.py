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

import codecs
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

__all__ = ["Corpus", "check_data", "load_corpus", "split_problem", "stdlib_text"]

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


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model",
                    "spiece.model", "sentencepiece.bpe.model")


def check_data(data: str, *, text_key: str = "text", tokenizer: str | None = None, max_bytes: int | None = None,
               seq_len: int | None = None, eval_tokens: int | None = None) -> None:
    """Fail fast in the parent, before any launch, on data that cannot work: a missing path, an
    empty or non-UTF-8 file, malformed JSONL, a wrong ``--text-key``, a ``--tokenizer`` that is no
    local tokenizer folder (which would fall back to the hub), or, with byte tokens, too few
    tokens for one training and one held-out evaluation block (the rule :func:`load_corpus` applies).

    The files are read and decoded as a rank would (up to ``max_bytes``), so this costs one pass
    over at most ``--max-data-bytes`` of text.
    """
    if tokenizer is not None:
        folder = Path(os.path.expanduser(tokenizer))
        if not folder.is_dir():
            raise UsageError("--tokenizer", f"{tokenizer!r} is not a folder; give a local Hugging Face tokenizer "
                                            "folder (trainplan never downloads one), or leave it out for byte tokens")
        if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
            raise UsageError("--tokenizer", f"{tokenizer} holds no tokenizer files ({', '.join(_TOKENIZER_FILES[:3])}, ...)")
    if data == "stdlib" or data.startswith("hf:"):
        return
    path = Path(os.path.expanduser(data))
    if not path.exists():
        raise UsageError("--data", f"{data!r} is not 'stdlib', 'hf:NAME' or an existing file or folder")
    limit = max_bytes if max_bytes is not None else 4_000_000
    total, docs = 0, 0
    for file in _data_files(path):
        if file.stat().st_size == 0:
            raise UsageError("--data", f"{file} is empty")
        for text in _checked_documents(file, text_key, limit - total):
            total += len(text.encode()) + 2 * (docs > 0)  # documents are joined by a blank line
            docs += 1
            if total >= limit:
                break
        if total >= limit:
            break
    if tokenizer is None and seq_len is not None and eval_tokens is not None:
        problem = split_problem(min(total, limit), eval_tokens, seq_len)
        if problem:
            raise UsageError("--data", f"{data}: {problem}")


def split_problem(n_tokens: int, eval_tokens: int, seq_len: int) -> str | None:
    """Why ``n_tokens`` cannot give one training and one held-out block of ``seq_len``, or None."""
    held = min(eval_tokens, n_tokens // 10) // seq_len * seq_len
    if held < seq_len or n_tokens - held < seq_len:
        return (f"{n_tokens} tokens are too few for --seq-len {seq_len}: need at least {10 * seq_len} to train "
                "and hold out one evaluation block")
    return None


def _checked_documents(file: Path, text_key: str, budget: int) -> Iterator[str]:
    """The documents of one local file, decoded strictly, each problem a one-line UsageError."""
    if file.suffix == ".txt":
        raw = file.read_bytes()[:max(budget, 1)]
        try:  # a cut at the byte budget may split a character: only complete ones must decode
            yield codecs.getincrementaldecoder("utf-8")().decode(raw, final=len(raw) == file.stat().st_size)
        except UnicodeDecodeError as exc:
            raise UsageError("--data", f"{file}: not UTF-8 text (byte {exc.start})") from None
        return
    if file.suffix == ".jsonl":
        with file.open("rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise UsageError("--data", f"{file}:{lineno}: not UTF-8 text (byte {exc.start})") from None
                except json.JSONDecodeError as exc:
                    raise UsageError("--data", f"{file}:{lineno}: not a JSON line ({exc.msg}, column {exc.colno})") from None
                if not isinstance(record, dict) or text_key not in record:
                    keys = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
                    raise UsageError("--text-key", f"{file}:{lineno} has no field {text_key!r} (it has: {keys})")
                if not isinstance(record[text_key], str):
                    raise UsageError("--text-key", f"{file}:{lineno}: field {text_key!r} holds "
                                                   f"{type(record[text_key]).__name__}, not text")
                yield record[text_key]
                budget -= len(line)
                if budget <= 0:
                    return
        return
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(file)
    except ImportError:
        raise UsageError("--data", "Parquet files need pyarrow (pip install pyarrow)") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors: a damaged or non-Parquet file
        raise UsageError("--data", f"{file}: not a readable Parquet file ({type(exc).__name__})") from None
    if text_key not in table.column_names:
        raise UsageError("--text-key", f"{file} has no column {text_key!r}; columns: {', '.join(table.column_names)}")
    for value in table.column(text_key).to_pylist():
        if not isinstance(value, str):
            raise UsageError("--text-key", f"{file}: column {text_key!r} holds {type(value).__name__}, not text")
        yield value


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
    problem = split_problem(ids.numel(), eval_tokens, seq_len)
    if problem:
        raise UsageError("--data", problem)
    return Corpus(train=ids[:-held], eval=ids[-held:], vocab_size=vocab, seq_len=seq_len, seed=seed)
