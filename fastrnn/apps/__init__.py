"""The applications built on fastrnn: the `fastrnn` command and what it runs.

    cli       `fastrnn` / `python -m fastrnn`: the char-level demo, then a backend timing;
              dispatches the subcommands below
    charlm    the character-level language model (`python -m fastrnn.apps.charlm --help`)
    lag       `fastrnn lag`: the long-time-lag sweep
    gradflow  `fastrnn gradflow`: gradient-flow plots of a fresh and a trained model

These are applications, not library: they import fastrnn's modules (model, optim, train,
tasks, diagnostics, head), and nothing in the library imports them. Importing this package
imports none of them.
"""
