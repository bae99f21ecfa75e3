"""A character-level language model, Karpathy's min-char-rnn workload (fastrnn.apps.charlm).

    python examples/char_rnn.py                      # the source of argparse.py, 45 s
    python examples/char_rnn.py input.txt --minutes 2
    python examples/char_rnn.py --help               # every option

An Elman network (hidden 100, softmax over the characters) learns to predict each next
character, with Adagrad (lr 0.1), gradient clipping and truncated BPTT over 25 steps, the
text cut into 16 parallel streams whose states carry across chunks. It prints the
cross-entropy per character (nats and bits) on the training text and on a held-out tail
before and after training, a line per epoch, and a sample.

main(argv) returns the fastrnn.apps.charlm.CharLMResult (losses before and after, epochs, time,
the sample, the model).
"""
import sys

from fastrnn.apps import charlm


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):      # a bare path: the text to train on
        argv = ["--text", argv[0], *argv[1:]]
    return charlm.run_cli(argv, prog="python examples/char_rnn.py")


if __name__ == "__main__":
    main()
