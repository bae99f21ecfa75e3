"""Reading .npz archives without pickle.

    with Archive(f) as archive:                      f: a binary file open for reading
        text = archive.read_text("__meta__", max_bytes)
        archive.expect_members(["__meta__", "W_x", ...])
        W_x = archive.read_array("W_x", (3, 5), np.float64)

The archive is read with zipfile and numpy's .npy header parser, never with np.load: a
member's header is checked (no object dtype, so nothing pickled is ever unpickled; the
expected dtype and shape; a size that fits them) before any of its data is read, the data is
read in chunks into an array allocated for the expected shape, and reading each member to
its end makes zipfile verify its CRC. Fortran-order, byte-swapped and compressed members are
accepted (valid .npz files, though not what fastrnn writes) and returned as native
C-contiguous arrays.

Every sign of a file that is not such an archive raises Invalid (with the reason) or one of
CORRUPTION_ERRORS (what zipfile, zlib and numpy raise on damaged or forged bytes): callers
turn both into their own error naming the file.
"""
import errno
import math
import struct
import zipfile
import zlib

import numpy as np

HEADER_SLACK = 1 << 16          # bound on an .npy member's header (numpy writes < 10 kB)
READ_CHUNK = 1 << 24            # bytes per read when filling an array

# Everything zipfile, zlib and numpy's header parser raise on a damaged or forged archive.
CORRUPTION_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError,
                     KeyError, IndexError, struct.error, zlib.error, NotImplementedError,
                     RuntimeError, OverflowError, SyntaxError, UnicodeError)


class Invalid(Exception):
    """The file is not a valid archive of the expected content; the message says why."""


def is_corruption(exc):
    """Whether exc (raised while reading an archive) means damaged or forged content: one of
    CORRUPTION_ERRORS, or OSError EINVAL (zipfile seeking to a negative offset read from a
    damaged directory). Other OSErrors (EIO ...) are real I/O errors."""
    if isinstance(exc, OSError):
        return exc.errno in (None, errno.EINVAL)
    return isinstance(exc, CORRUPTION_ERRORS)


class Archive:
    """An .npz (zip) archive of .npy members, open for reading. Members are named by their
    key, the file name without ".npy"."""

    def __init__(self, f):
        magic = f.read(4)
        if magic != b"PK\x03\x04":
            raise Invalid("it is empty" if not magic else
                          "it is a single .npy array, not an .npz archive"
                          if magic == b"\x93NUM" else "it is not an .npz (zip) archive")
        f.seek(0)
        self._zip = zipfile.ZipFile(f)
        infos = self._zip.infolist()
        self.names = [i.filename for i in infos]          # archive order, with ".npy"
        if len(set(self.names)) != len(self.names):
            self._zip.close()
            raise Invalid(f"duplicate archive members {sorted(self.names)}")
        self._infos = {i.filename: i for i in infos}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._zip.close()

    def __contains__(self, key):
        return key + ".npy" in self._infos

    def expect_members(self, keys):
        """Invalid unless the archive holds exactly the members keys."""
        expected = {k + ".npy" for k in keys}
        names = set(self.names)
        if names != expected:
            extra, missing = names - expected, expected - names
            raise Invalid("unexpected archive members: " + "; ".join(s for s in (
                f"missing {sorted(missing)}" if missing else "",
                f"unknown {sorted(extra)}" if extra else "") if s))

    def read_text(self, key, max_bytes):
        """The text held by member key: a 0-d unicode array, or 1-D uint8 UTF-8 bytes, of at
        most max_bytes."""
        info = self._info(key)
        if info.file_size > max_bytes:
            raise Invalid(f"{key!r} is {info.file_size} bytes, too large to be metadata")
        with self._zip.open(info) as f:
            shape, fortran, dtype = _read_header(f, key)
            if dtype.kind == "U" and shape == ():
                arr = np.empty((), dtype)
            elif dtype == np.uint8 and len(shape) == 1:
                arr = np.empty(shape, dtype)
            else:
                raise Invalid(f"{key!r} must be a 0-d unicode array or 1-D uint8 bytes "
                              f"holding JSON; got dtype {dtype}, shape {shape}")
            if arr.nbytes > max_bytes:
                raise Invalid(f"{key!r} is too large to be metadata")
            _fill(f, arr, key)
        if dtype.kind == "U":
            return str(arr[()])
        return arr.tobytes().decode("utf-8")

    def read_array(self, key, shape, dtype):
        """Member key as a native C-contiguous array, which must have the float dtype dtype
        (in either byte order) and the shape shape (a tuple)."""
        dtype = np.dtype(dtype)
        info = self._info(key)
        nbytes = math.prod(shape) * dtype.itemsize
        if info.file_size > nbytes + HEADER_SLACK:
            raise Invalid(f"member {key!r} is {info.file_size} bytes, larger than a "
                          f"{shape} {dtype} array")
        with self._zip.open(info) as f:
            got_shape, fortran, got_dt = _read_header(f, key)
            if got_dt.kind != "f" or got_dt.newbyteorder("=") != dtype:
                raise Invalid(f"parameter {key!r} has dtype {got_dt}, but the metadata says "
                              f"{dtype}")
            if tuple(got_shape) != shape:
                raise Invalid(f"parameter {key!r} has shape {tuple(got_shape)}, but the "
                              f"metadata says {shape}")
            buf = np.empty(shape[::-1] if fortran else shape, got_dt)
            _fill(f, buf, key)
        if fortran:
            buf = buf.T
        if buf.flags.c_contiguous and buf.dtype == dtype:
            return buf
        return np.ascontiguousarray(buf, dtype=dtype)

    def _info(self, key):
        try:
            return self._infos[key + ".npy"]
        except KeyError:
            raise Invalid(f"no {key!r} member (members: {sorted(self.names)})") from None


def _read_header(f, key):
    """(shape, fortran_order, dtype) of the .npy member open as f; Invalid for object
    dtypes (pickled data), which are never unpickled."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise Invalid(f"member {key!r} has unsupported .npy format version {version}")
    if dtype.hasobject:
        raise Invalid(f"member {key!r} holds Python objects (pickled data, dtype {dtype}); "
                      f"fastrnn model files hold no pickles and this one is not unpickled")
    return shape, fortran, dtype


def _fill(f, arr, key):
    """Read arr.nbytes bytes from f into arr (C-contiguous), then make sure the member ends
    there (which also makes zipfile check its CRC)."""
    flat = arr.reshape(-1).view(np.uint8)
    pos = 0
    while pos < flat.size:
        chunk = f.read(min(READ_CHUNK, flat.size - pos))
        if not chunk:
            raise Invalid(f"member {key!r} is truncated")
        flat[pos:pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
        pos += len(chunk)
    if f.read(1):
        raise Invalid(f"member {key!r} has data after its array")
