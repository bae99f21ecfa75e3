"""A character-level language model: Karpathy's min-char-rnn workload on fastrnn.

    python -m fastrnn.apps.charlm --text input.txt --minutes 1

The text becomes a vocabulary of its distinct characters and a one-hot input per character;
the network reads one character per step and is trained to give the next one a high
probability (softmax output, cross-entropy). As in min-char-rnn: hidden size 100, Adagrad
with lr 0.1, gradient clipping, and truncated BPTT over 25 steps with the state carried from
one chunk to the next. Unlike min-char-rnn, which reads the text as one stream, the text is
cut into a few parallel streams (contiguous slices of it), which go through the network
together as one batch: one optimizer step per 25-step chunk of all streams at once. An epoch
is one pass over the text.

Without --text the model reads the source of the standard library's argparse module
(about 100,000 characters of Python), which every Python install has. The last tenth of the
text is held out and scored (not trained on).

Memory: the one-hot inputs take 4 * (number of characters) * (vocabulary size) bytes
(about 35 MB for argparse; 260 MB for a 1 MB text of 65 characters); --max-chars caps it.
"""
import argparse
import dataclasses
import math
import sys
import time

import numpy as np

from .. import head
from ..model import ElmanRNN
from ..optim import Adagrad
from ..train import Callback, progress_bar, progress_kind

LN2 = math.log(2.0)

__all__ = ["build_vocab", "encode", "one_hot", "make_streams", "cross_entropy", "train",
           "sample", "default_text", "CharLMResult", "run", "main"]


# ---------------------------------------------------------------------------------------------
# Data

def build_vocab(text):
    """The distinct characters of text, sorted, as a string: vocab[i] is character i."""
    if not isinstance(text, str) or not text:
        raise ValueError("text must be a non-empty string")
    return "".join(sorted(set(text)))


def encode(text, vocab):
    """Character indices (int64 array) of text in vocab; ValueError names a character that
    is not in vocab."""
    index = {c: i for i, c in enumerate(vocab)}
    try:
        return np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))
    except KeyError as e:
        raise ValueError(f"character {e.args[0]!r} is not in the vocabulary") from None


def one_hot(ids, vocab_size, dtype="float32"):
    """ids (...) -> one-hot (..., vocab_size)."""
    ids = np.asarray(ids)
    out = np.zeros(ids.shape + (vocab_size,), dtype=dtype)
    np.put_along_axis(out, ids[..., None], 1, axis=-1)
    return out


def make_streams(ids, n_streams, vocab_size, dtype="float32"):
    """(X, Y): the indexed text cut into n_streams contiguous slices of equal length L,
    X (n_streams, L, V) the one-hot characters and Y (n_streams, L) the index of the
    character after each one. Stream s covers ids[s*L : (s+1)*L + 1]; the few characters
    that do not fill a stream are dropped."""
    ids = np.asarray(ids)
    L = (len(ids) - 1) // n_streams
    if L < 1:
        raise ValueError(f"{len(ids)} characters are too few for {n_streams} streams")
    starts = np.arange(n_streams)[:, None] * L
    X = one_hot(ids[starts + np.arange(L)], vocab_size, dtype)
    Y = ids[starts + np.arange(1, L + 1)]
    return X, Y


def default_text():
    """(description, text): the source of the standard library's argparse module."""
    path = argparse.__file__
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:                     # a zipped or frozen standard library
        import inspect
        text = inspect.getsource(argparse)
    return f"argparse.py from the Python standard library ({path})", text


# ---------------------------------------------------------------------------------------------
# Scoring, training, sampling

def cross_entropy(model, X, Y):
    """Mean cross-entropy per character, in nats, of the model on streams X (N, L, V) with
    next-character labels Y (N, L), each stream read from start to end with its state carried
    all the way (no truncation). Divide by ln 2 for bits per character."""
    P, _ = model.forward(X)
    return head.cross_entropy(P.reshape(-1, P.shape[-1]), Y.reshape(-1))


def _write(line):
    """print, but through tqdm when it is there so that an open progress bar stays intact."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        print(line, flush=True)
    else:
        tqdm.write(line)


class _EpochLog(Callback):
    """Numbers each epoch across several fit calls, logs one line per log_every epochs,
    moves the run's progress bar (bar: one for the whole run, not one per fit call), and
    stops a fit when the next epoch would end after the deadline."""

    def __init__(self, n_chars, log, log_every, deadline=None, bar=None):
        self.n_chars, self.log, self.log_every, self.deadline = n_chars, log, log_every, deadline
        self.bar = bar
        self.epochs = []
        self.t0 = time.perf_counter()

    def on_epoch_end(self, model, history, logs):
        logs = dict(logs, epoch=len(self.epochs) + 1,
                    elapsed=time.perf_counter() - self.t0)
        self.epochs.append(logs)
        if self.bar is not None:
            # a time budget: the bar counts seconds of it; else epochs
            done = (min(logs["elapsed"], self.bar.total) if self.deadline is not None
                    else logs["epoch"])
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix(epoch=logs["epoch"], loss=f"{logs['loss']:.4f}")
        if self.log is not None and self.log_every and logs["epoch"] % self.log_every == 0:
            self.log(f"epoch {logs['epoch']:4d}   loss {logs['loss']:.4f} nats/char "
                     f"({logs['loss'] / LN2:.3f} bits)   {logs['seconds']:.2f} s "
                     f"({self.n_chars / logs['seconds']:,.0f} chars/s)   "
                     f"elapsed {logs['elapsed']:.1f} s")
        return (self.deadline is not None
                and time.perf_counter() + logs["seconds"] > self.deadline)


def train(model, X, Y, *, epochs=None, seconds=None, lr=0.1, seq_length=25, clip_norm=5.0,
          batch_size=None, progress=None, log=_write, log_every=1):
    """Train model on streams (X, Y) with Adagrad and truncated BPTT of seq_length steps, for
    a number of epochs or for about `seconds` of wall time (whole epochs: training stops when
    the next epoch would overrun). Returns the list of per-epoch logs (fit's keys, with epoch
    counted across the run and `elapsed` seconds).

    batch_size: streams per optimizer step (default: all of them in one batch). With a time
    budget, one epoch is run first to measure its time and the rest in a second fit call
    (and a short third one if time is left). All calls share one Adagrad optimizer, and
    one progress bar (progress: as fit's, for the whole run: a bar of the time budget or
    of the epochs on a terminal; off a terminal the log lines are the progress).

    The loss an epoch line shows is fit's: the mean over the epoch's chunks, each scored
    just before its update, so just after the model trained on the text before it. It comes
    out lower than cross_entropy() of the same weights (by about 0.04 nats after 200 epochs
    on argparse.py), the gain of that recent adaptation.
    log_every=None: about 10 lines over the run.
    """
    if (epochs is None) == (seconds is None):
        raise ValueError("give exactly one of epochs and seconds")
    opt = Adagrad(model.params, lr=lr)
    N, L = Y.shape
    t0 = time.perf_counter()
    deadline = None if seconds is None else t0 + seconds
    bar = None
    if progress_kind(progress) == "bar":
        bar = (progress_bar(epochs, "train", unit="epoch") if seconds is None else
               progress_bar(round(seconds, 1), "train", unit="s",
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} "
                                       "s{postfix}"))
    cb = _EpochLog(N * L, log, log_every if log_every is not None else 0, deadline, bar)
    cb.t0 = t0
    # fit shows no progress of its own: the bar (or the log lines) covers every call
    kwargs = dict(batch_size=batch_size or N, optimizer=opt, tbptt=seq_length,
                  clip_norm=clip_norm, shuffle=False, progress=False, callbacks=[cb])
    try:
        if epochs is not None:
            if log_every is None:
                cb.log_every = max(1, round(epochs / 10))
            model.fit(X, Y, epochs=epochs, **kwargs)
            return cb.epochs
        model.fit(X, Y, epochs=1, **kwargs)
        first = True
        while True:             # usually two rounds: the estimate from epoch 1 is close
            now = time.perf_counter()
            remaining = int((deadline - now) / ((now - t0) / len(cb.epochs)))
            if remaining < 1 or (cb.epochs and now + cb.epochs[-1]["seconds"] > deadline):
                break
            if first and log_every is None:
                cb.log_every = max(1, round((remaining + 1) / 10))
            first = False
            model.fit(X, Y, epochs=remaining, **kwargs)
        return cb.epochs
    finally:
        if bar is not None:
            bar.close()


def sample(model, vocab, seed_text="\n", n=200, temperature=1.0, rng=None):
    """n characters drawn from the model one at a time with model.step, after it has read
    seed_text (at least one character; all in vocab). temperature divides the log
    probabilities (< 1: more conservative, > 1: more random; 0: always the most likely
    character). rng: a numpy Generator or a seed. Returns the n new characters."""
    if not seed_text:
        raise ValueError("seed_text must have at least one character")
    if not (isinstance(temperature, (int, float)) and temperature >= 0):
        raise ValueError(f"temperature must be a number >= 0; got {temperature!r}")
    rng = np.random.default_rng(rng)
    V = len(vocab)
    x = np.zeros(V, dtype=model.dtype)
    h = None
    for i in encode(seed_text, vocab):
        x[:] = 0
        x[i] = 1
        p, h = model.step(x, h)
    out = []
    for _ in range(n):
        p = p.astype(np.float64)
        if temperature == 0:
            i = int(np.argmax(p))
        else:
            if temperature != 1:
                p = head.softmax_(np.log(np.maximum(p, np.finfo(np.float64).tiny))
                                  / temperature)
            i = int(rng.choice(V, p=p / p.sum()))
        out.append(vocab[i])
        x[:] = 0
        x[i] = 1
        p, h = model.step(x, h)
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# The workload end to end

@dataclasses.dataclass
class CharLMResult:
    """What run() measured. Losses are mean cross-entropies per character in nats (divide
    by ln 2 for bits); val_* are None when nothing was held out."""
    vocab_size: int
    train_chars: int
    val_chars: int
    epochs: int
    seconds: float
    train_before: float
    train_after: float
    val_before: float | None
    val_after: float | None
    sample: str
    history: list
    model: ElmanRNN = dataclasses.field(repr=False)
    vocab: str = dataclasses.field(repr=False)


def _bits(nats):
    return f"{nats:.4f} nats/char ({nats / LN2:.3f} bits)"


def run(text=None, *, text_name=None, minutes=None, epochs=None, hidden=100, streams=16,
        seq_length=25, lr=0.1, clip_norm=5.0, val_fraction=0.1, max_chars=1_000_000,
        sample_length=300, temperature=0.8, seed_text=None, seed=0, progress=None,
        log=_write, log_every=1, blas_threads=1):
    """Build the vocabulary, train, score and sample; returns a CharLMResult. text=None:
    default_text(). Give minutes or epochs (neither: 0.75 minutes). Everything it reports
    goes through log (None: silent).

    blas_threads: BLAS threads during the run (None: the libraries' defaults). One, by
    default: with 16 streams every GEMM has 16 to 400 rows, too few to gain from a second
    thread, and a multi-threaded OpenBLAS stalls badly (epochs 10-30x slower) whenever
    another process is busy on one of the cores.
    """
    if blas_threads is None:
        return _run(text, text_name, minutes, epochs, hidden, streams, seq_length, lr,
                    clip_norm, val_fraction, max_chars, sample_length, temperature,
                    seed_text, seed, progress, log, log_every)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(blas_threads, user_api="blas"):
        return _run(text, text_name, minutes, epochs, hidden, streams, seq_length, lr,
                    clip_norm, val_fraction, max_chars, sample_length, temperature,
                    seed_text, seed, progress, log, log_every)


def _run(text, text_name, minutes, epochs, hidden, streams, seq_length, lr, clip_norm,
         val_fraction, max_chars, sample_length, temperature, seed_text, seed, progress, log,
         log_every):
    say = log if log is not None else (lambda line: None)
    if text is None:
        text_name, text = default_text()
    text_name = text_name or "the text"
    if max_chars and len(text) > max_chars:
        say(f"using the first {max_chars:,} of {len(text):,} characters (--max-chars)")
        text = text[:max_chars]
    vocab = build_vocab(text)
    V = len(vocab)
    ids = encode(text, vocab)
    n_val = int(len(ids) * val_fraction) if val_fraction else 0
    if n_val < 2 * seq_length:
        n_val = 0
    train_ids = ids[:len(ids) - n_val] if n_val else ids
    streams = max(1, min(streams, (len(train_ids) - 1) // seq_length))
    X, Y = make_streams(train_ids, streams, V)
    Xv, Yv = make_streams(ids[-n_val:], 1, V) if n_val else (None, None)
    say(f"text: {text_name}: {len(text):,} characters, {V} distinct")
    say(f"training on {Y.size:,} characters as {streams} streams of {Y.shape[1]:,} "
        f"(truncated BPTT, {seq_length} steps per update); held out: "
        f"{n_val - 1 if n_val else 0:,} characters")
    model = ElmanRNN(V, hidden, V, output="softmax", dtype="float32", seed=seed)
    say(f"{model}, Adagrad lr {lr}, gradient norm clipped at {clip_norm}")

    train_before = cross_entropy(model, X, Y)
    val_before = cross_entropy(model, Xv, Yv) if n_val else None
    say(f"before training: train {_bits(train_before)}"
        + (f", held-out {_bits(val_before)}" if n_val else "")
        + f"   (a uniform guess: ln {V} = {math.log(V):.4f})")

    if minutes is None and epochs is None:
        minutes = 0.75
    t0 = time.perf_counter()
    history = train(model, X, Y, epochs=epochs,
                    seconds=None if minutes is None else 60.0 * minutes, lr=lr,
                    seq_length=seq_length, clip_norm=clip_norm, progress=progress,
                    log=log, log_every=log_every)
    seconds = time.perf_counter() - t0

    train_after = cross_entropy(model, X, Y)
    val_after = cross_entropy(model, Xv, Yv) if n_val else None
    say(f"after {len(history)} epochs ({seconds:.1f} s, "
        f"{len(history) * Y.size / seconds:,.0f} chars/s): train {_bits(train_after)}"
        + (f", held-out {_bits(val_after)}" if n_val else ""))

    if seed_text is None:
        seed_text = "\n" if "\n" in vocab else text[0]
    text_sample = sample(model, vocab, seed_text, sample_length, temperature, rng=seed)
    say(f"sample ({sample_length} characters, temperature {temperature}, after "
        f"{seed_text!r}):\n{'-' * 72}\n{seed_text}{text_sample}\n{'-' * 72}")
    return CharLMResult(vocab_size=V, train_chars=int(Y.size), val_chars=max(n_val - 1, 0),
                        epochs=len(history), seconds=seconds, train_before=train_before,
                        train_after=train_after, val_before=val_before, val_after=val_after,
                        sample=text_sample, history=history, model=model, vocab=vocab)


def build_parser(prog="python -m fastrnn.apps.charlm"):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", metavar="FILE",
                        help="a UTF-8 text file (default: the source of argparse.py)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float,
                        help="train for about this long, in whole epochs (default 0.75)")
    budget.add_argument("--epochs", type=int, help="train for this many passes over the text")
    parser.add_argument("--hidden", type=int, default=100, help="hidden units (default 100)")
    parser.add_argument("--streams", type=int, default=16,
                        help="parallel streams the text is cut into (default 16)")
    parser.add_argument("--seq-length", type=int, default=25,
                        help="truncated-BPTT chunk length (default 25)")
    parser.add_argument("--lr", type=float, default=0.1, help="Adagrad learning rate")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="the tail of the text held out for scoring (default 0.1)")
    parser.add_argument("--max-chars", type=int, default=1_000_000,
                        help="use at most this many characters of the text (0: all)")
    parser.add_argument("--sample-length", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0, help="of the weights and the sample")
    parser.add_argument("--log-every", type=int, default=1, metavar="K",
                        help="a line every K epochs (default 1)")
    parser.add_argument("--blas-threads", type=int, default=1, metavar="N",
                        help="BLAS threads (default 1; 0: the libraries' default)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="a progress bar (default: only on a terminal)")
    return parser


def run_cli(argv=None, prog="python -m fastrnn.apps.charlm"):
    """Parse argv like main() and run; returns the CharLMResult."""
    args = build_parser(prog).parse_args(argv)
    text = text_name = None
    if args.text is not None:
        with open(args.text, encoding="utf-8", errors="replace") as f:
            text, text_name = f.read(), args.text
    return run(text, text_name=text_name, minutes=args.minutes, epochs=args.epochs,
               hidden=args.hidden, streams=args.streams, seq_length=args.seq_length,
               lr=args.lr, val_fraction=args.val_fraction, max_chars=args.max_chars,
               sample_length=args.sample_length, temperature=args.temperature,
               seed=args.seed, progress=args.progress, log_every=args.log_every,
               blas_threads=args.blas_threads or None)


def main(argv=None):
    """The command line; returns 0."""
    run_cli(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
