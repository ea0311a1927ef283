"""Torch-free CLIP BPE tokenizer: the token ids of open_clip's SimpleTokenizer, as numpy.

    text -> clean (ftfy.fix_text, html.unescape twice, whitespace, lower) -> regex pieces
         -> UTF-8 bytes -> byte-level BPE (merges from the vocab file) -> ids
    ids: int64 [N, context_length] = [SOT, ids..., EOT, 0...]; too long: cut, last = EOT.

It reads the BPE merges from the vocab file open_clip ships (bpe_simple_vocab_16e6.txt.gz),
which an export copies to VOCAB_FILE inside its folder, so apps tokenize class names without
open_clip or torch. The text cleaning imports `ftfy` and `regex` (what open_clip uses) lazily:
an image-only app never needs them. vs2_export/web/static/tokenizer.js is the JS twin.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import string
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from . import contract
from .files import open_regular

VOCAB_FILE = contract.VOCAB_FILE
"""Where an export keeps the vocab, relative to its folder."""
VOCAB_NAME = Path(VOCAB_FILE).name
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
"""SHA-256 of open_clip's bpe_simple_vocab_16e6.txt.gz (the OpenAI CLIP vocab)."""
DEFAULT_CONTEXT_LENGTH = 77
CLEAN_MODES = ("lower", "whitespace", "canonicalize")
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
_N_MERGES = 49152 - 256 - 2  # open_clip: merges[1:49152-256-2+1]


class TokenizerError(ValueError):
    """A tokenizer that cannot be built: missing or foreign vocab, unsupported open_clip tokenizer."""


@dataclass(frozen=True)
class TokenizerSpec:
    """The tokenizer of an exported model, as data (it can travel in the manifest)."""

    vocab: str = VOCAB_FILE
    """Vocab file, relative to the export folder."""
    context_length: int = DEFAULT_CONTEXT_LENGTH
    """Tokens per prompt, the text graph's input_ids [N, context_length]."""
    clean: str = "lower"
    """open_clip's clean mode: 'lower' (CLIP), 'whitespace' or 'canonicalize'."""

    def __post_init__(self) -> None:
        if not (isinstance(self.context_length, int) and 2 <= self.context_length <= 4096):
            raise TokenizerError(f"context_length: expected an int in [2, 4096], got "
                                 f"{self.context_length!r}")
        if self.clean not in CLEAN_MODES:
            raise TokenizerError(f"clean: expected one of {list(CLEAN_MODES)}, got {self.clean!r}")
        if not isinstance(self.vocab, str) or not self.vocab:
            raise TokenizerError(f"vocab: expected a relative file path, got {self.vocab!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenizerSpec:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def open_clip_vocab() -> Path:
    """The vocab file inside the installed open_clip package (found without importing it)."""
    found = importlib.util.find_spec("open_clip")
    if found is None or not found.submodule_search_locations:
        raise TokenizerError("open_clip is not installed: cannot find bpe_simple_vocab_16e6.txt.gz")
    path = Path(list(found.submodule_search_locations)[0]) / VOCAB_NAME
    if not path.is_file():
        raise TokenizerError(f"{path}: expected open_clip's BPE vocab there, found nothing")
    return path


def spec_of_open_clip(tokenizer: Any) -> TokenizerSpec:
    """TokenizerSpec of an open_clip tokenizer object (duck-typed; open_clip is not imported).

    Only SimpleTokenizer with the standard vocab, no extra special tokens and no reduction mask
    is supported; HFTokenizer / SigLipTokenizer models raise TokenizerError.
    """
    kind = type(tokenizer).__name__
    if kind != "SimpleTokenizer":
        raise TokenizerError(f"tokenizer: expected open_clip's SimpleTokenizer (CLIP BPE), got "
                             f"{kind}; only CLIP-BPE models have a torch-free tokenizer here")
    if getattr(tokenizer, "reduction_fn", None) is not None:
        raise TokenizerError("tokenizer: a reduction mask (training-time token dropping) is not "
                             "supported, expected plain truncation")
    if len(getattr(tokenizer, "all_special_ids", ())) != len(SPECIAL_TOKENS):
        raise TokenizerError("tokenizer: additional special tokens are not supported")
    clean = getattr(getattr(tokenizer, "clean_fn", None), "__name__", "")
    mode = {"_clean_lower": "lower", "_clean_whitespace": "whitespace",
            "_clean_canonicalize": "canonicalize"}.get(clean)
    if mode is None:
        raise TokenizerError(f"tokenizer: unknown clean function {clean!r}")
    if getattr(tokenizer, "vocab_size", None) != 49408:
        raise TokenizerError(f"tokenizer: expected the 49408-token CLIP vocab, got "
                             f"{getattr(tokenizer, 'vocab_size', None)}")
    return TokenizerSpec(context_length=int(tokenizer.context_length), clean=mode)


class ClipTokenizer:
    """texts -> int64 [N, context_length], equal to open_clip SimpleTokenizer(...)(texts)."""

    def __init__(self, vocab_path: str | Path, context_length: int = DEFAULT_CONTEXT_LENGTH,
                 clean: str = "lower"):
        self.spec = TokenizerSpec(context_length=context_length, clean=clean)
        self.context_length = context_length
        merges = _read_merges(Path(vocab_path))
        byte_chars = list(_bytes_to_unicode().values())
        vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
        vocab += list(SPECIAL_TOKENS)
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.sot_token_id = self.encoder[SPECIAL_TOKENS[0]]
        self.eot_token_id = self.encoder[SPECIAL_TOKENS[1]]
        self._cache: dict[str, str] = {t: t for t in SPECIAL_TOKENS}
        self._clean: Callable[[str], str] = _CLEANERS[clean]
        self._pattern = None  # compiled on first use (needs `regex`)

    @classmethod
    def from_export(cls, folder: str | Path, spec: TokenizerSpec | None = None) -> ClipTokenizer:
        """The tokenizer of an exported model: spec.vocab is read relative to `folder`."""
        spec = spec or TokenizerSpec()
        return cls(Path(folder) / spec.vocab, spec.context_length, spec.clean)

    def encode(self, text: str) -> list[int]:
        """One text -> BPE ids without SOT/EOT and without truncation."""
        if self._pattern is None:
            self._pattern = _compile_pattern()
        byte_encoder = _bytes_to_unicode()
        ids: list[int] = []
        for piece in self._pattern.findall(self._clean(text)):
            piece = "".join(byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(piece).split(" "))
        return ids

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> np.ndarray:
        """texts -> int64 [N, context_length]: SOT ids EOT, zero-padded; cut to fit, EOT last."""
        if isinstance(texts, str):
            texts = [texts]
        n = context_length or self.context_length
        out = np.zeros((len(texts), n), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
            if len(tokens) > n:
                tokens = tokens[:n]
                tokens[-1] = self.eot_token_id
            out[row, :len(tokens)] = tokens
        return out

    def _bpe(self, token: str) -> str:
        """One byte-encoded piece -> space-separated BPE tokens (open_clip's bpe(), same order)."""
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            ranked = [(self.bpe_ranks.get(pair, _INF), pair) for pair in pairwise(word)]
            rank, (first, second) = min(ranked, key=lambda item: item[0])
            if rank == _INF:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        result = " ".join(word)
        self._cache[token] = result
        return result


_INF = float("inf")


MAX_VOCAB_BYTES = 8 << 20
"""The vocab file, and its text once decompressed, at most (open_clip's: 1.4 MB gzipped, 3.2 MB
of text): a gzip bomb or /dev/zero in its place is refused after reading this much."""


def _read_merges(path: Path) -> list[tuple[str, str]]:
    with open_regular(path, "the BPE vocab", max_size=MAX_VOCAB_BYTES, error=TokenizerError) as (fh, _):
        try:
            head = fh.read(2)
            fh.seek(0)
            source = gzip.GzipFile(fileobj=fh) if head == b"\x1f\x8b" else fh
            raw = source.read(MAX_VOCAB_BYTES + 1)  # bounded: a gzip bomb stops here
        except (OSError, EOFError) as exc:
            raise TokenizerError(f"{path}: expected a gzipped UTF-8 BPE merges file ({exc})") from None
    if len(raw) > MAX_VOCAB_BYTES:
        raise TokenizerError(f"{path}: expected a BPE vocab of at most {MAX_VOCAB_BYTES} bytes of "
                             "text, got more (not the CLIP vocab)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TokenizerError(f"{path}: expected a gzipped UTF-8 BPE merges file ({exc})") from None
    lines = text.split("\n")[1:_N_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    if len(merges) != _N_MERGES or any(len(m) != 2 for m in merges):
        raise TokenizerError(f"{path}: expected {_N_MERGES} BPE merges of two symbols each "
                             f"(the CLIP vocab), got something else")
    return merges  # type: ignore[return-value]


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """open_clip's reversible byte -> printable character map (GPT-2 byte-level BPE)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _compile_pattern() -> Any:
    try:
        import regex  # noqa: PLC0415  lazy: only text needs it (open_clip's dependency)
    except ImportError:
        raise TokenizerError("tokenizing text needs the 'regex' package (pip install regex)") from None
    special = "|".join(SPECIAL_TOKENS)
    return regex.compile(special + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                         regex.IGNORECASE)


def _basic_clean(text: str) -> str:
    try:
        import ftfy  # noqa: PLC0415  lazy, as above
    except ImportError:
        raise TokenizerError("tokenizing text needs the 'ftfy' package (pip install ftfy)") from None
    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def _whitespace(text: str) -> str:
    return " ".join(text.split()).strip()


def _canonicalize(text: str) -> str:
    text = text.replace("_", " ").translate(str.maketrans("", "", string.punctuation)).lower()
    return " ".join(text.split()).strip()


_CLEANERS: dict[str, Callable[[str], str]] = {
    "lower": lambda text: _whitespace(_basic_clean(text)).lower(),
    "whitespace": lambda text: _whitespace(_basic_clean(text)),
    "canonicalize": lambda text: _canonicalize(_basic_clean(text)),
}
