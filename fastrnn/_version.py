"""The version of fastrnn, in its own module: fastrnn.io and the package both read it, and
nothing imports the package back."""
__version__ = "0.2.0.dev0"
